//! The service image's ingredients: the static `fft-service` binary.
//!
//! The image is `FROM scratch` (nothing can be pulled), so the binary must be fully static:
//! glibc's static C runtime (`+crt-static`) with an explicit `--target`, which keeps RUSTFLAGS
//! away from build scripts and proc macros (they must stay dynamic to be loaded by the host).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cmd::{Cmd, Runner};
use crate::paths::project_root;

/// A cold release build of the service and its dependencies on a small machine.
const STATIC_BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Builds `fft-service` in release as a static binary for the host triple and returns its
/// path, `target/<host triple>/release/fft-service`. In dry-run mode the build is only
/// planned and the path it would have is returned.
pub async fn build_static_binary(runner: &crate::cmd::Runner) -> anyhow::Result<PathBuf> {
    let triple = host_triple(runner).await?;
    let root = project_root();
    // Inside `cargo test`, CARGO names the cargo that is running: use the same toolchain.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let build = Cmd::new(cargo)
        .arg("build")
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .args(["--release", "--locked", "-p", "fft-service", "--target"])
        .arg(&triple)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .timeout(STATIC_BUILD_TIMEOUT);
    runner
        .run(&build)
        .await
        .with_context(|| format!("build the static fft-service binary for {triple}"))?;
    let binary = root
        .join("target")
        .join(&triple)
        .join("release")
        .join("fft-service");
    if !runner.is_dry_run() && !binary.is_file() {
        bail!(
            "the static build of fft-service for {triple} succeeded but {} does not exist",
            binary.display()
        );
    }
    Ok(binary)
}

async fn host_triple(runner: &Runner) -> Result<String> {
    let version = runner
        .query(&Cmd::new("rustc").arg("-vV"))
        .await
        .context("read the host triple from rustc")?;
    parse_host_triple(&version.stdout)
}

/// The `host:` line of `rustc -vV`.
fn parse_host_triple(rustc_version: &str) -> Result<String> {
    rustc_version
        .lines()
        .find_map(|line| line.strip_prefix("host:"))
        .map(|triple| triple.trim().to_string())
        .filter(|triple| !triple.is_empty())
        .with_context(|| format!("no `host:` line in the output of `rustc -vV`:\n{rustc_version}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_triple_comes_from_the_host_line() {
        let output = "rustc 1.95.0 (59807616e 2026-04-14)\nbinary: rustc\n\
                      host: aarch64-unknown-linux-gnu\nrelease: 1.95.0\n";
        assert_eq!(
            parse_host_triple(output).unwrap(),
            "aarch64-unknown-linux-gnu"
        );
        assert!(parse_host_triple("rustc 1.95.0\n").is_err());
    }

    #[tokio::test]
    async fn plans_a_static_release_build_for_the_host_triple() {
        let runner = Runner::dry_run();
        let binary = build_static_binary(&runner).await.expect("dry run");
        let triple = host_triple(&runner).await.unwrap();
        assert_eq!(
            binary,
            project_root()
                .join("target")
                .join(&triple)
                .join("release")
                .join("fft-service")
        );
        let plan = runner.plan();
        let build = plan
            .iter()
            .find(|step| step.contains(" build "))
            .unwrap_or_else(|| panic!("no cargo build in the plan: {plan:?}"));
        assert!(
            build.starts_with("$ RUSTFLAGS='-C target-feature=+crt-static' "),
            "{build}"
        );
        assert!(build.contains(&format!("--target {triple}")), "{build}");
        assert!(
            build.contains("--release") && build.contains("-p fft-service"),
            "{build}"
        );
    }

    #[tokio::test]
    #[ignore = "runs a release build of fft-service (minutes on a cold target dir); run with --ignored"]
    async fn builds_a_static_binary_that_runs() {
        let binary = build_static_binary(&Runner::new())
            .await
            .expect("static build");
        let output = std::process::Command::new(&binary)
            .arg("--version")
            .output()
            .expect("running the static binary");
        assert!(output.status.success());
        let elf = std::fs::read(&binary).unwrap();
        assert!(
            !has_interpreter(&elf),
            "{} asks for a dynamic loader (it has a PT_INTERP program header)",
            binary.display()
        );
    }

    /// Whether a 64-bit little-endian ELF file has a PT_INTERP program header, i.e. needs a
    /// dynamic loader to start.
    fn has_interpreter(elf: &[u8]) -> bool {
        const PT_INTERP: u32 = 3;
        assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
        let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
        let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
        let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
        (0..phnum).any(|index| {
            let at = phoff + index * phentsize;
            u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == PT_INTERP
        })
    }

    #[test]
    fn a_dynamic_executable_has_an_interpreter() {
        let own = std::fs::read("/proc/self/exe").unwrap();
        // The test binary itself is linked dynamically (no crt-static for tests).
        assert!(has_interpreter(&own));
    }
}
