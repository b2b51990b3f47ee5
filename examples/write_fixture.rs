//! Write a tiny fixture family to a folder: `cargo run --example write_fixture -- DIR [llama|mistral|qwen2]`.
fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "fixture-family".into()));
    let spec = match args.next().as_deref() {
        Some("mistral") => hf_tailor::testkit::fixture::TinySpec::mistral(),
        Some("qwen2") => hf_tailor::testkit::fixture::TinySpec::qwen2(),
        _ => hf_tailor::testkit::fixture::TinySpec::llama(),
    };
    hf_tailor::testkit::fixture::write_family(&dir, &spec, 2, 1)?;
    println!("wrote {}", dir.display());
    Ok(())
}
