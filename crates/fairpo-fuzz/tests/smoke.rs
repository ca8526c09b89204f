//! A short fuzzing run of every parser (a few thousand inputs each, seconds in all): no input
//! of the seeds, the committed corpus or their mutations may panic. The long campaign is
//! `cargo run -p fairpo-fuzz -- all --inputs 1000000` (README, Tests).

#[global_allocator]
static ALLOC: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, 4 << 30);

#[test]
fn no_parser_panics_on_mutated_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for t in fairpo_fuzz::targets::all() {
        // Slow parsers (whole model files) get fewer inputs.
        let n = match t.name {
            "pytorch-bin" | "safetensors" | "checkpoint" => 300,
            _ => 2000,
        };
        let r = fairpo_fuzz::run_target(
            &t,
            &tmp.path().join(t.name),
            &tmp.path().join("crashes"),
            n,
            7,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(r.inputs, n);
        for (i, msg, _) in r.panics {
            failures.push(format!("{} input {i}: {msg}", t.name));
        }
    }
    assert!(failures.is_empty(), "panics:\n{}", failures.join("\n"));
}
