//! `harness image`: build the service image and show how to run it as the cluster would.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::config::paths;
use crate::exec::cmd::Runner;
use crate::tools::image::container_spec::{self, ContainerSpec};

#[derive(Debug, Args)]
pub(crate) struct ImageArgs {
    /// Print the build steps without running them.
    #[arg(long)]
    pub dry_run: bool,
    /// Host port for the printed `docker run` command (bound to 127.0.0.1).
    #[arg(long, default_value_t = crate::config::names::APP_PORT)]
    pub port: u16,
}

pub(crate) fn run(args: &ImageArgs) -> ExitCode {
    crate::cli::block_on(build_and_describe(args))
}

async fn build_and_describe(args: &ImageArgs) -> Result<()> {
    let runner = if args.dry_run {
        Runner::dry_run()
    } else {
        Runner::new()
    };
    let spec = container_spec::from_manifest(&paths::app_manifest())?;
    let image = crate::tools::image::build_image(&runner).await?;
    println!("{}", image.reference);
    eprintln!(
        "\nRun it with the Deployment's limits and security context:\n  {}\n  curl -s -X POST 'http://127.0.0.1:{}/fft?numSamples=1024&freq=1'",
        docker_run_command(&spec, &image.reference, args.port),
        args.port
    );
    Ok(())
}

/// `docker run` with the limits, user and read-only root of the Deployment.
pub(crate) fn docker_run_command(spec: &ContainerSpec, reference: &str, host_port: u16) -> String {
    format!(
        "docker run --rm -p 127.0.0.1:{host_port}:{port} --user {user} --read-only --cap-drop ALL \
         --security-opt no-new-privileges --cpus {cpus} --memory {memory} --memory-swap {memory} {reference}",
        port = spec.container_port,
        user = spec.run_as_user,
        cpus = spec.cpu_limit_nanos as f64 / 1e9,
        memory = spec.memory_limit_bytes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_run_carries_the_deployment_settings() {
        let spec = ContainerSpec {
            cpu_limit_nanos: 200_000_000,
            memory_limit_bytes: 256 << 20,
            run_as_user: 65532,
            read_only_root_filesystem: true,
            container_port: 8080,
        };
        assert_eq!(
            docker_run_command(&spec, "fft-service:abc", 18080),
            "docker run --rm -p 127.0.0.1:18080:8080 --user 65532 --read-only --cap-drop ALL \
             --security-opt no-new-privileges --cpus 0.2 --memory 268435456 --memory-swap 268435456 fft-service:abc"
        );
    }
}
