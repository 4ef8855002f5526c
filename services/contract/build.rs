//! Derives the schema version from `migrations/`: the highest numeric prefix
//! of a `NNNN_name.sql` file. The controller hashes it into the migration
//! Job's name, so a new migration re-runs the Job even for the same image tag.

use std::path::Path;

const MIGRATIONS: &str = "../../migrations";

fn main() {
    // Read at run time (not `env!`): a build directory reused from another
    // checkout must still look at this checkout's migrations.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR for build scripts");
    let dir = Path::new(&manifest_dir).join(MIGRATIONS);
    // Relative to the package: an absolute path would pin the check to the
    // checkout that first built this target directory, and a build reusing it
    // from another checkout (worktree, CI cache) would keep a stale version.
    println!("cargo:rerun-if-changed={MIGRATIONS}");
    let mut latest = 0u64;
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let name = entry.expect("directory entry").file_name().to_string_lossy().into_owned();
        if let Some(number) = name.strip_suffix(".sql").and_then(|n| n.split('_').next()).and_then(|n| n.parse().ok()) {
            latest = latest.max(number);
        }
    }
    assert!(latest > 0, "no NNNN_name.sql migrations in {}", dir.display());
    println!("cargo:rustc-env=COLLOQUY_MIGRATIONS_VERSION={latest}");
}
