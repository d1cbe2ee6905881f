//! Building the service image: the static `fft-service` binary, then the image from
//! `service/Dockerfile` through testcontainers' buildable image, tagged by content.
//!
//! The image is `FROM scratch` (nothing can be pulled), so the binary must be a fully static
//! Linux executable for the CPU the Docker daemon runs: on a Linux host of that CPU, the host
//! triple with glibc's static C runtime (`+crt-static`); anywhere else (macOS with Docker
//! Desktop, another CPU) `<arch>-unknown-linux-musl` linked by the toolchain's own `rust-lld`, so
//! no cross C toolchain is needed. An explicit `--target` keeps RUSTFLAGS away from build scripts
//! and proc macros (they must stay dynamic to be loaded by the host).
//! The tag is a digest of the Dockerfile and the binary: a rebuilt binary is a new image, which
//! is what makes `kind load` + `imagePullPolicy: IfNotPresent` safe, and an unchanged one is not
//! built twice.

pub mod container_spec;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use testcontainers::GenericBuildableImage;
use testcontainers::core::BuildImageOptions;
use testcontainers::runners::AsyncBuilder;

use crate::config::names::{IMAGE_REPOSITORY, SERVICE_PACKAGE};
use crate::config::paths::project_root;
use crate::exec::cmd::{Cmd, Runner};

/// A cold release build of the service and its dependencies on a small machine.
const STATIC_BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Builds `fft-service` in release as a static Linux binary for the Docker daemon's CPU (see
/// [`image_build_target`]) and returns its path, `target/<triple>/release/fft-service`. In
/// dry-run mode the build is only planned and the path it would have is returned.
pub(crate) async fn build_static_binary(
    runner: &crate::exec::cmd::Runner,
) -> anyhow::Result<PathBuf> {
    // The docker that the preflight would find (`.tools/bin` first, then PATH).
    let docker = crate::tools::preflight::ToolSearch::from_env()
        .find("docker")
        .map(|p| p.into_os_string())
        .unwrap_or_else(|| "docker".into());
    let target = build_target(runner, &docker).await?;
    let triple = &target.triple;
    let root = project_root();
    // Inside `cargo test`, CARGO names the cargo that is running: use the same toolchain.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let build = Cmd::new(cargo)
        .arg("build")
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .args(["--release", "--locked", "-p", SERVICE_PACKAGE, "--target"])
        .arg(triple)
        .env("RUSTFLAGS", &target.rustflags)
        .timeout(STATIC_BUILD_TIMEOUT);
    let hint = if target.cross {
        format!(" (is the target installed? `rustup target add {triple}`)")
    } else {
        String::new()
    };
    runner
        .run(&build)
        .await
        .with_context(|| format!("build the static fft-service binary for {triple}{hint}"))?;
    let binary = crate::config::paths::cargo_target_dir()
        .join(triple)
        .join("release")
        .join(SERVICE_PACKAGE);
    if !runner.is_dry_run() && !binary.is_file() {
        bail!(
            "the static build of fft-service for {triple} succeeded but {} does not exist",
            binary.display()
        );
    }
    Ok(binary)
}

/// What the image's binary is compiled for, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BuildTarget {
    pub triple: String,
    pub rustflags: String,
    /// The triple is not the host's: its standard library must be installed
    /// (`rustup target add`), and the binary cannot be run here.
    pub cross: bool,
}

/// The target of the image's binary. The image is Linux whatever the host: a host triple is kept
/// only when it is Linux on the CPU the daemon runs (`docker_arch`, from `docker info`; the
/// host's CPU when unknown). Otherwise the binary is `<arch>-unknown-linux-musl`, whose static C
/// runtime ships with the Rust target, linked with `rust-lld` (a host `cc` would produce a
/// binary for the host's own format, e.g. Mach-O on macOS).
pub(crate) fn image_build_target(
    host_triple: &str,
    docker_arch: Option<&str>,
) -> Result<BuildTarget> {
    let host_arch = host_triple
        .split('-')
        .next()
        .filter(|arch| !arch.is_empty())
        .with_context(|| format!("`{host_triple}` is not a target triple"))?;
    let arch = match docker_arch.map(str::trim).filter(|a| !a.is_empty()) {
        Some(reported) => rust_arch(reported).with_context(|| {
            format!(
                "the Docker daemon reports architecture `{reported}`, which has no static Linux \
                 Rust target this build knows (x86_64, aarch64, s390x, ppc64le, riscv64)"
            )
        })?,
        None => host_arch,
    };
    let host_is_linux = host_triple.split('-').any(|part| part == "linux");
    if host_is_linux && arch == host_arch {
        return Ok(BuildTarget {
            triple: host_triple.to_string(),
            rustflags: "-C target-feature=+crt-static".into(),
            cross: false,
        });
    }
    Ok(BuildTarget {
        triple: format!("{arch}-unknown-linux-musl"),
        rustflags: "-C target-feature=+crt-static -C linker=rust-lld".into(),
        cross: true,
    })
}

/// The Rust architecture for a kernel's `uname -m` (what `docker info` reports) or a Go/OCI
/// platform name.
fn rust_arch(reported: &str) -> Option<&'static str> {
    Some(match reported {
        "x86_64" | "amd64" => "x86_64",
        "aarch64" | "arm64" => "aarch64",
        "s390x" => "s390x",
        "ppc64le" | "powerpc64le" => "powerpc64le",
        "riscv64" => "riscv64gc",
        _ => return None,
    })
}

/// The image's build target on this machine: the host triple from `rustc -vV`, the daemon's CPU
/// from `docker info` (when Docker does not answer, the host's CPU is assumed: the image build
/// will report Docker's problem itself).
pub(crate) async fn build_target(runner: &Runner, docker: &OsStr) -> Result<BuildTarget> {
    let host = host_triple(runner).await?;
    let arch = docker_architecture(runner, docker).await;
    image_build_target(&host, arch.as_deref())
}

async fn docker_architecture(runner: &Runner, docker: &OsStr) -> Option<String> {
    let query = Cmd::new(docker)
        .args(["info", "--format", "{{.Architecture}}"])
        .timeout(Duration::from_secs(20));
    match runner.query(&query).await {
        Ok(output) => Some(output.stdout.trim().to_string()).filter(|a| !a.is_empty()),
        Err(err) => {
            eprintln!(
                "warning: could not ask Docker for its CPU architecture ({err:#}); building the \
                 image's binary for this host's CPU"
            );
            None
        }
    }
}

/// The OCI platform (`linux/<GOARCH>`) of the Docker daemon's CPU, from `docker info`'s
/// `uname -m` style architecture: what `docker save --platform` takes to export only the
/// variant the daemon really holds.
pub(crate) async fn docker_platform(runner: &Runner, docker: &OsStr) -> Result<String> {
    let reported = docker_architecture(runner, docker)
        .await
        .context("the Docker daemon did not say its CPU architecture (`docker info`)")?;
    oci_platform(&reported).with_context(|| {
        format!("`docker info` reports architecture `{reported}`, which has no known OCI platform")
    })
}

/// `linux/<GOARCH>` for a kernel's `uname -m` (or a Go architecture name).
fn oci_platform(reported: &str) -> Option<String> {
    let go_arch = match reported {
        "x86_64" | "amd64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "armv7l" | "arm" => "arm",
        "s390x" => "s390x",
        "ppc64le" => "ppc64le",
        "riscv64" => "riscv64",
        _ => return None,
    };
    Some(format!("linux/{go_arch}"))
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

/// Where the binary goes inside the build context (the Dockerfile's `COPY` source).
const BINARY_IN_CONTEXT: &str = SERVICE_PACKAGE;

/// An image built from this workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    /// `fft-service:<content tag>`.
    pub reference: String,
    pub tag: String,
}

/// `sha256(Dockerfile ‖ binary)`, first 12 hex digits: short enough to read, long enough that
/// two builds never collide in practice.
pub(crate) fn content_tag(dockerfile: &[u8], binary: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update((dockerfile.len() as u64).to_le_bytes());
    hasher.update(dockerfile);
    hasher.update(binary);
    let digest = hasher.finalize();
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds the static binary, then the image; an image with the same content tag is reused.
pub async fn build_image(runner: &Runner) -> Result<BuiltImage> {
    let binary = build_static_binary(runner).await?;
    let dockerfile = project_root().join("service").join("Dockerfile");
    if runner.is_dry_run() {
        runner.step(format!(
            "build image {IMAGE_REPOSITORY}:<content tag> from {} with {} (testcontainers buildable image)",
            dockerfile.display(),
            binary.display()
        ));
        return Ok(BuiltImage {
            reference: format!("{IMAGE_REPOSITORY}:dry-run"),
            tag: "dry-run".into(),
        });
    }
    build_image_from(runner, &dockerfile, &binary).await
}

/// Builds the image from a given Dockerfile and binary (the binary is copied into the build
/// context as `fft-service`).
pub(crate) async fn build_image_from(
    runner: &Runner,
    dockerfile: &Path,
    binary: &Path,
) -> Result<BuiltImage> {
    let read =
        |path: &Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let tag = content_tag(&read(dockerfile)?, &read(binary)?);
    let reference = format!("{IMAGE_REPOSITORY}:{tag}");
    runner.step(format!(
        "build image {reference} from {} (testcontainers buildable image)",
        dockerfile.display()
    ));
    // The returned GenericImage only names the image; callers start containers from the tag.
    let _named = GenericBuildableImage::new(IMAGE_REPOSITORY, &tag)
        .with_dockerfile(dockerfile)
        .with_file(binary, BINARY_IN_CONTEXT)
        .build_image_with(BuildImageOptions::new().with_skip_if_exists(true))
        .await
        .with_context(|| format!("building image {reference} from {}", dockerfile.display()))?;
    Ok(BuiltImage { reference, tag })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_tag_changes_with_either_input() {
        let base = content_tag(b"FROM scratch", b"binary");
        assert_eq!(base.len(), 12);
        assert!(base.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(base, content_tag(b"FROM scratch", b"binary"));
        assert_ne!(base, content_tag(b"FROM scratch ", b"binary"));
        assert_ne!(base, content_tag(b"FROM scratch", b"binary2"));
        // Moving bytes between the two inputs is a different image too.
        assert_ne!(
            content_tag(b"ab", b"c"),
            content_tag(b"a", b"bc"),
            "the boundary between Dockerfile and binary is part of the digest"
        );
    }

    #[tokio::test]
    async fn dry_run_builds_nothing_and_says_what_it_would_do() {
        let runner = Runner::dry_run();
        let image = build_image(&runner).await.unwrap();
        assert_eq!(image.reference, "fft-service:dry-run");
        let plan = runner.plan();
        assert_eq!(plan.len(), 2, "{plan:?}");
        assert!(plan[0].contains(" build "), "{plan:?}");
        assert!(
            plan[1].starts_with("build image fft-service:<content tag>"),
            "{plan:?}"
        );
    }

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

    #[rstest::rstest]
    #[case::linux_host_same_cpu(
        "x86_64-unknown-linux-gnu",
        Some("x86_64"),
        "x86_64-unknown-linux-gnu",
        false
    )]
    #[case::linux_host_docker_unknown(
        "aarch64-unknown-linux-gnu",
        None,
        "aarch64-unknown-linux-gnu",
        false
    )]
    #[case::linux_musl_host(
        "x86_64-unknown-linux-musl",
        Some("x86_64"),
        "x86_64-unknown-linux-musl",
        false
    )]
    #[case::mac_apple_silicon(
        "aarch64-apple-darwin",
        Some("aarch64"),
        "aarch64-unknown-linux-musl",
        true
    )]
    #[case::mac_apple_silicon_go_name(
        "aarch64-apple-darwin",
        Some("arm64"),
        "aarch64-unknown-linux-musl",
        true
    )]
    #[case::mac_intel(
        "x86_64-apple-darwin",
        Some("x86_64"),
        "x86_64-unknown-linux-musl",
        true
    )]
    #[case::mac_docker_unknown("aarch64-apple-darwin", None, "aarch64-unknown-linux-musl", true)]
    #[case::mac_emulated_amd64_daemon(
        "aarch64-apple-darwin",
        Some("amd64"),
        "x86_64-unknown-linux-musl",
        true
    )]
    #[case::windows(
        "x86_64-pc-windows-msvc",
        Some("x86_64"),
        "x86_64-unknown-linux-musl",
        true
    )]
    #[case::linux_host_other_cpu_daemon(
        "x86_64-unknown-linux-gnu",
        Some("aarch64"),
        "aarch64-unknown-linux-musl",
        true
    )]
    fn the_image_binary_always_targets_linux_on_the_daemons_cpu(
        #[case] host: &str,
        #[case] docker_arch: Option<&str>,
        #[case] triple: &str,
        #[case] cross: bool,
    ) {
        let target = image_build_target(host, docker_arch).unwrap();
        assert_eq!(target.triple, triple);
        assert_eq!(target.cross, cross);
        assert!(target.rustflags.contains("+crt-static"), "{target:?}");
        // Only the cross build brings its own linker; a host `cc` links for the host's format.
        assert_eq!(
            target.rustflags.contains("-C linker=rust-lld"),
            cross,
            "{target:?}"
        );
    }

    #[test]
    fn an_unknown_daemon_architecture_is_an_error_naming_it() {
        let err = image_build_target("aarch64-apple-darwin", Some("mips"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`mips`"), "{err}");
    }

    #[tokio::test]
    async fn plans_a_static_release_build_for_the_image_target() {
        let runner = Runner::dry_run();
        let binary = build_static_binary(&runner).await.expect("dry run");
        let target = build_target(&runner, OsStr::new("docker")).await.unwrap();
        let triple = target.triple.clone();
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
            build.starts_with(&format!("$ RUSTFLAGS='{}' ", target.rustflags)),
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

    #[test]
    fn the_daemons_cpu_names_its_oci_platform() {
        assert_eq!(oci_platform("x86_64").as_deref(), Some("linux/amd64"));
        assert_eq!(oci_platform("aarch64").as_deref(), Some("linux/arm64"));
        assert_eq!(oci_platform("arm64").as_deref(), Some("linux/arm64"));
        assert_eq!(oci_platform("mips"), None);
    }
}
