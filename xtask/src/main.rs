//! `cargo xtask`: project automation as a plain binary (see `.cargo/config.toml`).
fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::bail!("unknown xtask command {:?}; none are implemented yet", args)
}
