fn main() {
    eprintln!("hf-tailor: CLI not wired yet");
    std::process::exit(2);
}
