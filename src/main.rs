//! The `hf-tailor` binary: a thin shell over the library. Parses arguments, runs one
//! stage or the whole pipeline, and turns any error into one line on stderr.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hf-tailor: error: {}", one_line(&err));
            ExitCode::from(cli::exit_code(&err))
        }
    }
}

/// The error and its causes on one line, leaving out a cause whose text an outer message
/// already quotes (typed errors often embed their source, as in "cannot read F: {source}").
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}
