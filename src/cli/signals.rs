//! SIGINT and SIGTERM end hf-tailor cleanly: an unfinished build output (its staging
//! folder) is removed before the process exits, so an interrupted build leaves nothing
//! behind. Everything else hf-tailor writes is already safe to interrupt (atomic writes,
//! an fsynced journal, resumable `.incomplete` downloads).

use tokio::signal::unix::{signal, SignalKind};

/// Start the watcher thread; returns once the handlers are installed (so no signal
/// arriving afterwards takes the default, debris-leaving path).
pub fn install() {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name("signals".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_io().build() else {
            let _ = ready_tx.send(());
            return;
        };
        rt.block_on(async move {
            let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                let _ = ready_tx.send(());
                return;
            };
            let _ = ready_tx.send(());
            let (name, code) = tokio::select! {
                _ = int.recv() => ("SIGINT", 130),
                _ = term.recv() => ("SIGTERM", 143),
            };
            let removed = hf_tailor::writer::remove_in_flight();
            hf_tailor::pipeline::out_folder::release_all();
            let what = match removed.as_slice() {
                [] => String::new(),
                dirs => format!("; removed the unfinished output {}", dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")),
            };
            eprintln!("hf-tailor: interrupted by {name}{what}");
            std::process::exit(code);
        });
    });
    if spawned.is_ok() {
        let _ = ready_rx.recv();
    }
}
