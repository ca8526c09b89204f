//! `cargo xtask tune`: the appendix E hyper-parameter grids, selected on the validation split,
//! written in the layout of the paper's Table 5.
//!
//! Each method's grid is its own parameters in full (appendix D/E: SFT's learning rate, RW's
//! λ_P, GDRO's η_α; DPO β × ε, SimPO β × γ × ε, CPO β × λ_CPO × ε), at the presets' learning
//! rate and η_α (the values the paper's tuning ended on). With `--rates`, FairPO's learning
//! rate and η_α grids follow, one at a time around the chosen values. Finished runs are
//! reused by name, so an interrupted tune continues where it stopped; the names hold the grid
//! values, not `--epochs` or `--set`, so pass `--fresh` after changing those. The FairPO and
//! RW runs start from the preset's reference (`runs/<dataset>-sft`, trained first if missing).
//!
//! Selection, on the validation metrics of each run's selected epoch:
//! - BCE-SFT: the highest mAP over all labels (D.1);
//! - GDRO: the highest worst-group mAP (D.3, "good worst-group performance");
//! - RW and FairPO: the highest privileged mAP among the runs whose non-privileged mAP is within
//!   1 point of the best non-privileged mAP of the grid (D.2, "without an excessive drop").

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::flags::Opts;
use crate::runs::{report, train_with};

/// How far below the grid's best non-privileged mAP a run may be and still be chosen (points).
const P_BAR_SLACK: f64 = 1.0;

/// The part of a run name for `key = value`: the key's last segment, then the value.
fn name_part(key: &str, value: &str) -> String {
    format!("-{}{value}", key.rsplit('.').next().unwrap_or(key))
}

struct Grid {
    method: &'static str,
    /// (config key, label in the table, values).
    axes: Vec<(&'static str, &'static str, &'static [&'static str])>,
}

const BETA: &[&str] = &["0.1", "0.5", "1.0"];
const EPSILON: &[&str] = &["0.01", "0.05", "0.1"];
const LR_SFT: &[&str] = &["1e-5", "5e-5", "1e-4", "5e-4", "1e-3"];
const LR_FAIRPO: &[&str] = &["1e-5", "5e-5", "1e-4", "5e-4"];
const ETA_ALPHA: &[&str] = &["0.01", "0.05", "0.1", "0.2"];

fn grid(method: &str) -> Result<Grid> {
    let (method, axes): (&'static str, Vec<_>) = match method {
        "sft" => ("sft", vec![("train.lr", "lr", LR_SFT)]),
        "rw" => (
            "rw",
            vec![("objective.lambda_p", "λ_P", &["2", "3", "5", "8", "10"][..])],
        ),
        "gdro" => ("gdro", vec![("scheduler.eta_alpha", "η_α", ETA_ALPHA)]),
        "dpo" => (
            "dpo",
            vec![
                ("objective.beta", "β", BETA),
                ("objective.epsilon", "ε", EPSILON),
            ],
        ),
        "simpo" => (
            "simpo",
            vec![
                ("objective.beta", "β", BETA),
                ("objective.gamma", "γ", &["0.05", "0.1", "0.2"][..]),
                ("objective.epsilon", "ε", EPSILON),
            ],
        ),
        "cpo" => (
            "cpo",
            vec![
                ("objective.beta", "β", BETA),
                ("objective.lambda_cpo", "λ_CPO", &["0.1", "0.5", "1.0"][..]),
                ("objective.epsilon", "ε", EPSILON),
            ],
        ),
        other => bail!("tune: --method sft, rw, gdro, dpo, simpo, cpo or all, got {other:?}"),
    };
    Ok(Grid { method, axes })
}

/// Validation mAP (%) of a finished run at its selected epoch: all, P, P̄.
fn selected_val_map(run: &Path) -> Result<[f64; 3]> {
    let path = run.join("log.jsonl");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut chosen = None;
    for (i, line) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        if v["kind"] == "epoch" && v["split"] == "val" && v["improved"] == true {
            chosen = Some(v);
        }
    }
    let v = chosen.with_context(|| format!("{}: no improving validation epoch", path.display()))?;
    let m = |g: &str| {
        v["map"][g]
            .as_f64()
            .map(|x| x * 100.0)
            .with_context(|| format!("{}: no map.{g}", path.display()))
    };
    Ok([m("all")?, m("privileged")?, m("non_privileged")?])
}

struct Tried {
    values: Vec<String>,
    run: PathBuf,
    map: [f64; 3],
}

/// Index of the chosen run under the method's rule (module docs).
fn choose(method: &str, tried: &[Tried]) -> usize {
    let best = |score: &dyn Fn(&Tried) -> f64, ok: &dyn Fn(&Tried) -> bool| {
        (0..tried.len())
            .filter(|&i| ok(&tried[i]))
            .max_by(|&a, &b| score(&tried[a]).total_cmp(&score(&tried[b])))
            .expect("the grid is not empty and its best P-bar run qualifies")
    };
    match method {
        "sft" => best(&|t| t.map[0], &|_| true),
        "gdro" => best(&|t| t.map[1].min(t.map[2]), &|_| true),
        _ => {
            let top = tried.iter().map(|t| t.map[2]).fold(f64::MIN, f64::max);
            best(&|t| t.map[1], &|t| t.map[2] >= top - P_BAR_SLACK)
        }
    }
}

/// Trains every point of `axes` (a full grid) over `base` as runs named `prefix-<key><value>...`;
/// returns what was tried.
fn run_grid(
    ds: &str,
    method: &str,
    prefix: &str,
    axes: &[(&'static str, &'static str, &'static [&'static str])],
    base: &[String],
    opts: &Opts,
) -> Result<Vec<Tried>> {
    let mut points: Vec<Vec<String>> = vec![vec![]];
    for (_, _, values) in axes {
        points = points
            .into_iter()
            .flat_map(|p| {
                values.iter().map(move |v| {
                    let mut q = p.clone();
                    q.push(v.to_string());
                    q
                })
            })
            .collect();
    }
    let started = Instant::now();
    let mut tried = Vec::new();
    for (i, values) in points.iter().enumerate() {
        let mut sets = base.to_vec();
        let mut name = prefix.to_string();
        for ((key, _, _), v) in axes.iter().zip(values) {
            sets.push(format!("{key}={v}"));
            name.push_str(&name_part(key, v));
        }
        if i > 0 && !crate::jobs::planning() {
            let per = started.elapsed().as_secs_f64() / i as f64;
            eprintln!(
                "xtask tune: [{}/{}] {name}, ETA {:.1} min",
                i + 1,
                points.len(),
                per * (points.len() - i) as f64 / 60.0
            );
        }
        let run = train_with(
            &format!("{ds}-{method}"),
            None,
            &name,
            opts.seed,
            &sets,
            opts.fresh,
        )?;
        // Planned runs (`--emit-jobs`) have no results yet.
        let map = if crate::jobs::planning() {
            [f64::NAN; 3]
        } else {
            selected_val_map(&run)?
        };
        tried.push(Tried {
            values: values.clone(),
            run,
            map,
        });
    }
    Ok(tried)
}

/// `cargo xtask tune [--dataset demo|coco|nus] [--method NAME|all] [--rates] [--epochs N]`.
pub(crate) fn tune(opts: &Opts) -> Result<()> {
    let ds = opts.dataset.as_deref().unwrap_or("demo");
    let methods: Vec<&str> = match opts.method.as_deref().unwrap_or("all") {
        "all" => vec!["sft", "rw", "gdro", "dpo", "simpo", "cpo"],
        m => vec![m],
    };
    let start = Instant::now();
    let mut base = opts.sets.clone();
    if let Some(e) = opts.epochs {
        base.push(format!("train.epochs={e}"));
    }
    let mut rows = Vec::new();
    let mut all_runs = Vec::new();
    for m in methods {
        let g = grid(m)?;
        let prefix = format!("{ds}-{}-tune", g.method);
        let tried = run_grid(ds, g.method, &prefix, &g.axes, &base, opts)?;
        if crate::jobs::planning() {
            all_runs.extend(tried.iter().map(|t| t.run.clone()));
            continue;
        }
        let i = choose(g.method, &tried);
        let mut chosen: Vec<(String, String)> = g
            .axes
            .iter()
            .zip(&tried[i].values)
            .map(|((_, label, _), v)| (label.to_string(), v.clone()))
            .collect();
        let mut map = tried[i].map;
        all_runs.extend(tried.iter().map(|t| t.run.clone()));
        let fairpo = ["dpo", "simpo", "cpo"].contains(&g.method);
        if opts.rates && fairpo {
            // The rate runs' names carry every value already fixed, so a rerun after another
            // choice never reuses them.
            let mut fixed = base.clone();
            let mut prefix = prefix.clone();
            for ((key, _, _), v) in g.axes.iter().zip(&tried[i].values) {
                fixed.push(format!("{key}={v}"));
                prefix.push_str(&name_part(key, v));
            }
            for axis in [
                ("train.lr", "η_w", LR_FAIRPO),
                ("scheduler.eta_alpha", "η_α", ETA_ALPHA),
            ] {
                let t = run_grid(ds, g.method, &prefix, &[axis], &fixed, opts)?;
                let j = choose(g.method, &t);
                fixed.push(format!("{}={}", axis.0, t[j].values[0]));
                prefix.push_str(&name_part(axis.0, &t[j].values[0]));
                chosen.push((axis.1.to_string(), t[j].values[0].clone()));
                map = t[j].map;
                all_runs.extend(t.iter().map(|t| t.run.clone()));
            }
        }
        rows.push((g.method, tried.len(), chosen, map));
    }
    if crate::jobs::planning() {
        return report(&all_runs, &format!("{ds}-tune"));
    }
    println!(
        "\nTable 5 layout: chosen on the validation split of {ds} ({} runs, {:.1} min)\n",
        all_runs.len(),
        start.elapsed().as_secs_f64() / 60.0
    );
    println!("| method | runs | chosen | val mAP all / P / P̄ |");
    println!("|---|---|---|---|");
    for (method, n, chosen, map) in &rows {
        let chosen: Vec<String> = chosen.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        println!(
            "| {method} | {n} | {} | {:.2} / {:.2} / {:.2} |",
            chosen.join(", "),
            map[0],
            map[1],
            map[2]
        );
    }
    report(&all_runs, &format!("{ds}-tune"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(map: [f64; 3]) -> Tried {
        Tried {
            values: vec![],
            run: PathBuf::new(),
            map,
        }
    }

    #[test]
    fn selection_rules() {
        let tried = [
            t([80.0, 40.0, 90.0]),
            t([79.0, 60.0, 88.5]),
            t([70.0, 70.0, 80.0]),
        ];
        // SFT: best overall; GDRO: best worst group; FairPO/RW: best P within 1 point of P̄'s best.
        assert_eq!(choose("sft", &tried), 0);
        assert_eq!(choose("gdro", &tried), 2);
        assert_eq!(choose("cpo", &tried), 0);
        let tried = [t([80.0, 40.0, 90.0]), t([79.0, 60.0, 89.2])];
        assert_eq!(choose("rw", &tried), 1);
    }
}
