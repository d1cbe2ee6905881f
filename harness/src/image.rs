//! Building the service image: the static binary, then the image from `service/Dockerfile`
//! through testcontainers' buildable image, tagged by content.
//!
//! The Dockerfile starts `FROM scratch`, so nothing is pulled (this matters where no registry can
//! be reached). The tag is a digest of the Dockerfile and the binary: a rebuilt binary is a new
//! image, which is what makes `kind load` + `imagePullPolicy: IfNotPresent` safe, and an
//! unchanged one is not built twice.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use testcontainers::GenericBuildableImage;
use testcontainers::core::BuildImageOptions;
use testcontainers::runners::AsyncBuilder;

use crate::cmd::{Cmd, Runner};
use crate::paths;

/// The repository part of every image this project builds.
pub const IMAGE_REPOSITORY: &str = "fft-service";

/// The image named in `manifests/app.yaml`, replaced by the built image when applied.
pub const MANIFEST_IMAGE_PLACEHOLDER: &str = "fft-service:0.1.0";

/// Where the binary goes inside the build context (the Dockerfile's `COPY` source).
const BINARY_IN_CONTEXT: &str = "fft-service";

/// An image built from this workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    /// `fft-service:<content tag>`.
    pub reference: String,
    pub tag: String,
}

/// The host's target triple, from `rustc -vV`: the static binary is built for it explicitly,
/// because `+crt-static` applies to the target given with `--target` (not to build scripts).
pub async fn host_triple(runner: &Runner) -> Result<String> {
    let output = runner.query(&Cmd::new("rustc").arg("-vV")).await?;
    output
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_string)
        .context("`rustc -vV` printed no `host:` line")
}

/// Builds `fft-service` as a static release binary and returns its path.
pub async fn build_static_binary(runner: &Runner) -> Result<PathBuf> {
    let triple = host_triple(runner).await?;
    let root = paths::project_root();
    let cmd = Cmd::new("cargo")
        .args(["build", "--release", "--locked", "-p", "fft-service"])
        .args(["--target", triple.as_str()])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .current_dir(&root)
        .timeout(std::time::Duration::from_secs(900));
    runner
        .run(&cmd)
        .await
        .context("building the static fft-service binary")?;
    Ok(root
        .join("target")
        .join(&triple)
        .join("release")
        .join("fft-service"))
}

/// `sha256(Dockerfile ‖ binary)`, first 12 hex digits: short enough to read, long enough that
/// two builds never collide in practice.
pub fn content_tag(dockerfile: &[u8], binary: &[u8]) -> String {
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
    let dockerfile = paths::project_root().join("service").join("Dockerfile");
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
pub async fn build_image_from(
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
        assert!(
            plan[0]
                .starts_with("$ RUSTFLAGS='-C target-feature=+crt-static' cargo build --release"),
            "{plan:?}"
        );
        assert!(plan[0].contains("--target "), "{plan:?}");
        assert!(
            plan[1].starts_with("build image fft-service:<content tag>"),
            "{plan:?}"
        );
    }
}
