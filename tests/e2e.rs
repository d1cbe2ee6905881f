//! The scenario suite: `cargo test --test e2e`. The runner lives in the harness library
//! (`harness::suite`), so this binary and the library's own tests share it.

fn main() -> std::process::ExitCode {
    harness::suite::main()
}
