//! `lockctl`: see and manage the locks held in a store (`lockctl --help`).
//! All of it is [`lock_runtime::cli::run`].

fn main() {
    let exit = lock_runtime::cli::run(
        std::env::args_os(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    std::process::exit(exit.code());
}
