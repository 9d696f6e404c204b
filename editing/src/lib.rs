//! Editing sessions for AetherFlow's tests and benches.
//!
//! The real editing traces (josephg/editing-traces) live outside the repository, in
//! `../shared/traces/` beside the checkout; a plain clone does not have them. [`session`]
//! loads a real trace where it exists and otherwise generates a seeded editing session of the
//! same shape (insert and delete runs, cursor jumps, pastes; concurrent sessions with a
//! `parents` graph), and says which of the two it returned, so a test or bench can print what
//! data it ran on.
//!
//! ```
//! use aetherflow_editing::{Fallback, session};
//!
//! let (trace, source) = session("no-such-trace.json.gz", Fallback::sequential(7, 500)).unwrap();
//! assert_eq!(trace.txns.len(), 500);
//! assert!(source.to_string().starts_with("generated"));
//! // The same seed gives the same session.
//! let (again, _) = session("no-such-trace.json.gz", Fallback::sequential(7, 500)).unwrap();
//! assert_eq!(trace.end_content, again.end_content);
//! ```

pub mod generate;
mod trace;

pub use trace::{EditTrace, EditTxn, Patch, TraceError, load};

use std::fmt;
use std::path::{Path, PathBuf};

/// Where the shared real traces live: `../shared/traces` relative to the repository root.
pub fn shared_traces_dir() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // This crate sits one level below the repository root.
    let beside_repository = crate_dir.parent().and_then(Path::parent);
    beside_repository
        .unwrap_or(crate_dir)
        .join("shared")
        .join("traces")
}

/// The session to generate when a real trace is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// One typist: [`generate::sequential`].
    Sequential {
        /// Seed of the generator.
        seed: u64,
        /// Number of edits (one patch each).
        edits: usize,
    },
    /// Several typists editing apart and merging now and then: [`generate::concurrent`].
    Concurrent {
        /// Seed of the generator.
        seed: u64,
        /// Number of typists.
        agents: usize,
        /// Number of transactions.
        txns: usize,
    },
}

impl Fallback {
    /// A sequential session of `edits` edits.
    pub fn sequential(seed: u64, edits: usize) -> Fallback {
        Fallback::Sequential { seed, edits }
    }

    /// A concurrent session of `txns` transactions by `agents` typists.
    pub fn concurrent(seed: u64, agents: usize, txns: usize) -> Fallback {
        Fallback::Concurrent { seed, agents, txns }
    }

    /// Generates the session.
    pub fn generate(self) -> EditTrace {
        match self {
            Fallback::Sequential { seed, edits } => generate::sequential(seed, edits),
            Fallback::Concurrent { seed, agents, txns } => generate::concurrent(seed, agents, txns),
        }
    }
}

/// Which data a session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A real trace, read from this file.
    Real(PathBuf),
    /// Generated, because the real trace at `missing` is absent.
    Generated {
        /// What was generated.
        fallback: Fallback,
        /// The real trace that was looked for.
        missing: PathBuf,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Real(path) => write!(f, "real trace {}", path.display()),
            Source::Generated { fallback, missing } => {
                match fallback {
                    Fallback::Sequential { seed, edits } => write!(
                        f,
                        "generated sequential session (seed {seed}, {edits} edits)"
                    )?,
                    Fallback::Concurrent { seed, agents, txns } => write!(
                        f,
                        "generated concurrent session (seed {seed}, {agents} agents, {txns} txns)"
                    )?,
                }
                write!(f, "; the real trace {} is absent", missing.display())
            }
        }
    }
}

/// The real trace `name` from [`shared_traces_dir`] (or `name` itself if it is a path to an
/// existing file), or, where it is absent, the session `fallback` generates.
///
/// A trace file that exists but cannot be read or parsed is an error, not a reason to fall
/// back: that would hide a broken checkout of the traces.
pub fn session(name: &str, fallback: Fallback) -> Result<(EditTrace, Source), TraceError> {
    let given = Path::new(name);
    let path = if given.is_file() {
        given.to_owned()
    } else {
        shared_traces_dir().join(name)
    };
    if path.exists() {
        let trace = load(&path)?;
        return Ok((trace, Source::Real(path)));
    }
    Ok((
        fallback.generate(),
        Source::Generated {
            fallback,
            missing: path,
        },
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_absent_trace_falls_back_to_the_generated_session_and_says_so() {
        let (trace, source) = session("absent.json.gz", Fallback::concurrent(3, 2, 200)).unwrap();
        assert_eq!(trace.num_agents, 2);
        assert_eq!(trace.txns.len(), 200);
        let said = source.to_string();
        assert!(said.contains("seed 3"), "{said}");
        assert!(said.contains("absent.json.gz is absent"), "{said}");
    }

    #[test]
    fn a_broken_trace_file_is_an_error_not_a_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.json.gz");
        std::fs::write(&path, b"not gzip").unwrap();
        let result = session(path.to_str().unwrap(), Fallback::sequential(1, 10));
        assert!(matches!(result, Err(TraceError::Read { .. })), "{result:?}");
    }
}
