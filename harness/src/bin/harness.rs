//! `harness`: the suite's environments and checks, for people at a terminal. The subcommands
//! and their logic live in the library (`harness::cli`).

fn main() -> std::process::ExitCode {
    harness::cli::main()
}
