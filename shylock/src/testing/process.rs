//! Spawning etcd so that it dies with the test process.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type Request = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `command` with `PR_SET_PDEATHSIG`, from a thread that lives as long
/// as the process (the signal fires when the spawning *thread* exits, and test
/// threads exit early).
pub(crate) fn spawn(command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("etcd-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    // SAFETY: prctl is async-signal-safe and touches no memory
                    // of the parent.
                    unsafe {
                        command.pre_exec(|| {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                                return Err(io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("start the etcd spawner thread");
        Mutex::new(tx)
    });
    let (reply, result) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send((command, reply))
        .map_err(|_| io::Error::other("etcd spawner thread is gone"))?;
    result
        .recv()
        .map_err(|_| io::Error::other("etcd spawner thread is gone"))?
}

/// The etcd binary: `$SHYLOCK_ETCD_BIN`, else `etcd` on `PATH`.
pub(crate) fn etcd_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("SHYLOCK_ETCD_BIN") {
        return bin.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the `etcd` binary was not found on PATH: install it (Debian: \
                 `apt-get install etcd-server`, or run `make test`), or set SHYLOCK_ETCD_BIN"
            )
        })
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// Removes `dir` when the process exits (for servers kept in statics).
pub(crate) fn remove_at_exit(dir: &Path) {
    static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    extern "C" fn cleanup() {
        if let Ok(dirs) = DIRS.lock() {
            for dir in dirs.iter() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
    let mut dirs = DIRS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if dirs.is_empty() {
        // SAFETY: registers a plain function with no captured state.
        unsafe {
            libc::atexit(cleanup);
        }
    }
    dirs.push(dir.to_owned());
}
