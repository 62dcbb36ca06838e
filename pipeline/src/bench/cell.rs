//! One cell of the grid as a child process (`quire run` with the cell's budget and dtype), so
//! that its peak memory is its own: the kernel's `ru_maxrss` of the reaped child (through
//! `wait4`), the largest resident set the `quire run` process had (or one of its PDF workers,
//! if larger, since the child reaps them), not this process's high-water mark, which only grows
//! from cell to cell.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How the child ended and what it used.
#[derive(Debug, Clone)]
pub struct ChildRun {
    /// Its exit code, or 128 + the signal that killed it.
    pub code: i32,
    /// From start to exit: model loading included.
    pub wall: Duration,
    /// Peak resident set in bytes.
    pub max_rss_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CellError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the log file {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("waiting for the cell's process: {0}")]
    Wait(std::io::Error),
}

/// Runs `program args` with `env` added to the environment, its stdout and stderr into `log`,
/// and waits for it.
pub fn run_child(
    program: &Path,
    args: &[OsString],
    env: &[(String, String)],
    log: &Path,
) -> Result<ChildRun, CellError> {
    let log_file = std::fs::File::create(log).map_err(|source| CellError::Log {
        path: log.to_path_buf(),
        source,
    })?;
    let err_file = log_file.try_clone().map_err(|source| CellError::Log {
        path: log.to_path_buf(),
        source,
    })?;
    let started = Instant::now();
    let child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file))
        .stderr(Stdio::from(err_file))
        .spawn()
        .map_err(|source| CellError::Spawn {
            program: program.to_path_buf(),
            source,
        })?;
    let (status, usage) = wait4(child.id() as libc::pid_t).map_err(CellError::Wait)?;
    let wall = started.elapsed();
    // Reaped by `wait4`: `child` must not wait again (its pid may be reused).
    drop(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Ok(ChildRun {
        code,
        wall,
        // Linux reports kilobytes.
        max_rss_bytes: (usage.ru_maxrss.max(0) as u64) * 1024,
    })
}

fn wait4(pid: libc::pid_t) -> std::io::Result<(libc::c_int, libc::rusage)> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals; `pid` is our unreaped child.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            return Ok((status, usage));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_output_and_peak_memory_of_the_child() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("child.log");
        // Python allocates and touches 64 MiB: the child's peak, not ours, is reported.
        let script = "import sys; b = bytearray(64 << 20); print('hello'); sys.exit(3)";
        let run = run_child(
            Path::new("python3"),
            &["-c".into(), script.into()],
            &[],
            &log,
        )
        .unwrap();
        assert_eq!(run.code, 3);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "hello\n");
        assert!(run.max_rss_bytes >= 64 << 20, "{}", run.max_rss_bytes);
        assert!(run.max_rss_bytes < 1 << 30, "{}", run.max_rss_bytes);
    }
}
