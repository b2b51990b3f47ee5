//! The `hf-tailor` binary: a thin shell over the library. Parses arguments, runs one
//! stage or the whole pipeline, and turns any error into one line on stderr.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line.
            eprintln!("hf-tailor: error: {err:#}");
            ExitCode::from(cli::exit_code(&err))
        }
    }
}
