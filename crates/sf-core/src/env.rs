//! Every environment variable the binaries read, documented once.
//!
//! Flags that can come from the environment name these constants in their clap `env = ...`, so the
//! `--help` text and this list never disagree.

/// A support-matrix data file to use instead of the embedded one.
pub const MATRIX_FILE: &str = "SF_MATRIX_FILE";
/// Directory where each step appends its JSON result record.
pub const RESULTS_DIR: &str = "SF_RESULTS_DIR";

/// Comma list (or `all`) of Slurm versions.
pub const SLURM_VERSIONS: &str = "SF_SLURM_VERSIONS";
/// Comma list (or `all`) of toolchains.
pub const TOOLCHAINS: &str = "SF_TOOLCHAINS";
/// Comma list (or `all`) of architectures.
pub const ARCHS: &str = "SF_ARCHS";
/// Comma list (or `all`) of build kinds (cpu, gpu).
pub const BUILDS: &str = "SF_BUILDS";
/// The pipeline a matrix is for: deps, version, tarball, image.
pub const PIPELINE: &str = "SF_PIPELINE";
/// Cells to add, selectors separated by `;` or newlines.
pub const INCLUDE: &str = "SF_INCLUDE";
/// Cells to leave out, selectors separated by `;` or newlines.
pub const EXCLUDE: &str = "SF_EXCLUDE";
/// sf-matrix: leave out the cells `sf-publish status` lists as published (its JSON file, or `-`).
pub const SKIP_PUBLISHED: &str = "SF_SKIP_PUBLISHED";
/// Output format of data commands: json or table.
pub const FORMAT: &str = "SF_FORMAT";

/// Storage: where mirrors and tarballs live, `s3://bucket/prefix` or `file:///dir`.
pub const DESTINATION: &str = "SF_DESTINATION";
/// Storage: the public CDN base URL in front of the bucket.
pub const CDN_URL: &str = "SF_CDN_URL";
/// Storage: key template overrides (see `layout::Templates`).
pub const DEPS_MIRROR_TEMPLATE: &str = "SF_DEPS_MIRROR_TEMPLATE";
pub const VERSION_MIRROR_TEMPLATE: &str = "SF_VERSION_MIRROR_TEMPLATE";
pub const TARBALL_TEMPLATE: &str = "SF_TARBALL_TEMPLATE";
pub const TARBALL_VARIANT_TEMPLATE: &str = "SF_TARBALL_VARIANT_TEMPLATE";

/// One matrix cell as sf-matrix prints it (a file, `-` for stdin, or inline JSON for sf-build):
/// read by sf-spackenv and sf-build.
pub const CELL: &str = "SF_CELL";
/// The id of the matrix cell a step runs for (the workflows set it from `matrix.id`): sf-sign,
/// sf-publish and sf-invalidate put it in their result records (so sf-summary joins them to the
/// cell's row) and in the AWS role session name.
pub const CELL_ID: &str = "SF_CELL_ID";
/// sf-spackenv: the folder the cell's environment is written to.
pub const OUT_DIR: &str = "SF_OUT_DIR";
/// sf-spackenv: a stack data file to use instead of the embedded `data/spack-stack.yaml`.
pub const STACK_FILE: &str = "SF_STACK_FILE";
/// Air-gapped inputs over the stack file's: local archives of Spack and the package repos
/// (`NAME=FILE`, comma-separated), their sha256s (`NAME=HEX`), a local source mirror and a
/// directory of Python wheels for Spack's solver.
pub const ARCHIVES: &str = "SF_ARCHIVES";
pub const ARCHIVE_SHA256S: &str = "SF_ARCHIVE_SHA256S";
pub const SOURCE_MIRROR: &str = "SF_SOURCE_MIRROR";
pub const PYTHON_WHEELS: &str = "SF_PYTHON_WHEELS";
/// sf-build: the folder sf-spackenv wrote for the cell.
pub const ENV_DIR: &str = "SF_ENV_DIR";
/// sf-build: the container engine, podman or docker.
pub const ENGINE: &str = "SF_ENGINE";
/// sf-build: space-separated global options for every engine call (e.g. `--storage-driver=vfs`).
pub const ENGINE_ARGS: &str = "SF_ENGINE_ARGS";
/// sf-build: space-separated options for every container `run` (e.g. `--ulimit nofile=20000:20000`).
pub const RUN_ARGS: &str = "SF_RUN_ARGS";
/// Extra options for every image build, space-separated.
pub const IMAGE_BUILD_ARGS: &str = "SF_IMAGE_BUILD_ARGS";
/// sf-build: the Slurm tarball to write, test or put into an image.
pub const TARBALL: &str = "SF_TARBALL";
/// sf-build: reproducible-builds clamp for file mtimes and the build date (seconds since 1970).
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";
/// sf-build: the registry images are pushed to (e.g. `ghcr.io/vantagecompute`).
pub const REGISTRY: &str = "SF_REGISTRY";
/// sf-build: the registry user.
pub const REGISTRY_USER: &str = "SF_REGISTRY_USER";
/// sf-build: the registry token. Secret: read from the environment only, masked; falls back to
/// `GITHUB_TOKEN`.
pub const REGISTRY_TOKEN: &str = "SF_REGISTRY_TOKEN";
/// The parallel build jobs: sf-spackenv renders them into spack.yaml's `config:build_jobs` and
/// the `build.sh` default (default: the cores of the machine it runs on); inside the build
/// container it overrides that default, and sf-build sets it there from `--jobs`.
pub const BUILD_JOBS: &str = "SF_BUILD_JOBS";

/// The OpenPGP secret key (armored, or base64 of armored/binary). Secret: never echoed.
pub const GPG_PRIVATE_KEY: &str = "GPG_PRIVATE_KEY";
/// Passphrase for the secret key. Secret: never echoed.
pub const GPG_PASSPHRASE: &str = "GPG_PASSPHRASE";
/// The primary-key fingerprint a signature must be made with / verified against.
pub const SIGNING_FINGERPRINT: &str = "SF_SIGNING_FINGERPRINT";

/// S3-compatible endpoint override (local servers, `act` rehearsals).
pub const S3_ENDPOINT_URL: &str = "S3_ENDPOINT_URL";
/// IAM role assumed through GitHub OIDC.
pub const AWS_ROLE_ARN: &str = "AWS_ROLE_ARN";
/// CloudFront distribution to invalidate.
pub const CLOUDFRONT_DISTRIBUTION_ID: &str = "SF_CLOUDFRONT_DISTRIBUTION_ID";

/// Host cache root for builds (default `~/.slurm-factory`).
pub const CACHE_DIR: &str = "SLURM_FACTORY_CACHE_DIR";

/// GitHub Actions runner variables read by [`crate::gha`].
pub const GITHUB_ACTIONS: &str = "GITHUB_ACTIONS";
pub const GITHUB_OUTPUT: &str = "GITHUB_OUTPUT";
pub const GITHUB_ENV: &str = "GITHUB_ENV";
pub const GITHUB_STEP_SUMMARY: &str = "GITHUB_STEP_SUMMARY";
pub const GITHUB_TOKEN: &str = "GITHUB_TOKEN";
/// REST API base URL (`https://api.github.com`, or a GitHub Enterprise Server's).
pub const GITHUB_API_URL: &str = "GITHUB_API_URL";
/// `owner/name` of the repository the workflow runs in.
pub const GITHUB_REPOSITORY: &str = "GITHUB_REPOSITORY";
/// The commit the workflow runs for.
pub const GITHUB_SHA: &str = "GITHUB_SHA";
pub const ACTIONS_ID_TOKEN_REQUEST_URL: &str = "ACTIONS_ID_TOKEN_REQUEST_URL";
pub const ACTIONS_ID_TOKEN_REQUEST_TOKEN: &str = "ACTIONS_ID_TOKEN_REQUEST_TOKEN";
