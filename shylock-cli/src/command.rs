//! Running check, reload and exec commands: through `sh -c`, with a timeout
//! that kills the whole process group, and their output logged: its first
//! [`OUTPUT_LIMIT`] bytes, the rest counted and dropped (a command that
//! prints without end cannot fill the daemon's memory or its log).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::exit::{msg, Error};

/// How much of a command's output (each of stdout and stderr) is kept.
pub const OUTPUT_LIMIT: usize = 16 * 1024;

/// Reads a pipe to its end, keeping the first `limit` bytes; returns them
/// and how many more there were.
async fn read_capped(mut pipe: impl tokio::io::AsyncRead + Unpin, limit: usize) -> (Vec<u8>, u64) {
    let (mut kept, mut dropped) = (Vec::new(), 0u64);
    let mut buf = [0u8; 8192];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = limit.saturating_sub(kept.len()).min(n);
        kept.extend_from_slice(&buf[..room]);
        dropped += (n - room) as u64;
    }
    (kept, dropped)
}

/// Runs `script` with `sh -c`; `Ok` if it exits 0 within `timeout`.
pub async fn run(what: &str, script: &str, timeout: Duration) -> Result<(), Error> {
    let result = run_once(what, script, timeout).await;
    crate::telemetry::command(what, result.is_ok());
    result
}

async fn run_once(what: &str, script: &str, timeout: Duration) -> Result<(), Error> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| msg(format!("{what} `{script}` could not start: {e}")))?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let finished = tokio::time::timeout(timeout, async {
        let ((out, more_out), (err, more_err), status) = tokio::join!(
            read_capped(stdout, OUTPUT_LIMIT),
            read_capped(stderr, OUTPUT_LIMIT),
            child.wait()
        );
        let mut err = err;
        if more_out + more_err > 0 {
            err.extend_from_slice(
                format!(
                    "\n... ({} more bytes of output dropped)",
                    more_out + more_err
                )
                .as_bytes(),
            );
        }
        (status, out, err)
    })
    .await;
    let Ok((status, out, err)) = finished else {
        if let Some(pid) = pid {
            // SAFETY: kill(2) on the process group we created.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
        return Err(msg(format!(
            "{what} `{script}` timed out after {timeout:?} and was killed"
        )));
    };
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&err)
    );
    let output = output.trim_end();
    let status = status.map_err(|e| msg(format!("{what} `{script}`: {e}")))?;
    if status.success() {
        if !output.is_empty() {
            tracing::info!(what, command = script, output, "command succeeded");
        }
        Ok(())
    } else {
        tracing::warn!(what, command = script, %status, output, "command failed");
        Err(msg(format!(
            "{what} `{script}` failed ({status}): {}",
            last_lines(output, 5)
        )))
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Parses an octal mode such as `0644`.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{text:?} is not an octal file mode such as 0644"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn success_failure_and_timeout() {
        run("check", "echo fine", Duration::from_secs(5))
            .await
            .unwrap();
        let failed = run("check", "echo broken >&2; exit 3", Duration::from_secs(5))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            failed.contains("broken") && failed.contains("3"),
            "{failed}"
        );
        let started = std::time::Instant::now();
        let hung = run("reload", "sleep 30", Duration::from_millis(300))
            .await
            .unwrap_err()
            .to_string();
        assert!(hung.contains("timed out"), "{hung}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the hung command was killed"
        );
    }

    /// Regression: a command that printed without end (`yes`) was buffered
    /// whole (2.15 GB resident) and logged as one line.
    #[tokio::test]
    async fn endless_output_is_capped() {
        let error = run(
            "check",
            "yes | head -c 50000000; exit 1",
            Duration::from_secs(30),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("more bytes of output dropped"),
            "{}",
            &error[..200.min(error.len())]
        );
        assert!(
            error.len() < 2 * OUTPUT_LIMIT,
            "{} bytes of error",
            error.len()
        );
    }
}
