//! `shylock mount`: the keys under a prefix as a live FUSE filesystem.

mod fs;
mod invalidate;
mod listing;
mod prefetch;

mod view;

use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};

use fuser::{Config, MountOption, SessionACL};
use shylock::TreeEvent;

use crate::cli::MountArgs;
use crate::connect::ConnectArgs;
use crate::exit::{msg, Error};
use view::{Owner, View};

/// Room left in an etcd request for everything but the value (the key,
/// the transaction around it).
const REQUEST_OVERHEAD: usize = 4096;

pub async fn run(connect: &ConnectArgs, args: MountArgs) -> Result<(), Error> {
    // A past revision cannot be written.
    let read_only = args.read_only
        || args.revision.is_some()
        || env_true("SHYLOCK_READ_ONLY")
        || env_true("ETC_READ_ONLY");
    check_fuse()?;
    prepare_mountpoint(&args.mountpoint)?;
    // The mount's memory is small objects. Where transparent huge pages
    // are `always`, each first touch of an allocator region zeroed 2 MB:
    // 15% of the CPU of a first pass over 10,000 files (perf).
    // SAFETY: sets a flag of this process; no memory is passed.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };

    let options = connect.options()?;
    let client = shylock::Client::connect(options).await?;
    let base = args.prefix.trim_end_matches('/').to_owned();
    let view: Arc<RwLock<View>> = Arc::new(RwLock::new(View::new(std::iter::empty())));
    let notifier: Arc<OnceLock<fuser::Notifier>> = Arc::default();
    let handler = invalidate::Handler::new(view.clone(), notifier.clone(), base.clone());
    let invalidations = handler.invalidations();
    let reporter = args.report.start(&client, "mount")?;
    let report = crate::reporting::prefix_report(reporter.as_ref(), &args.prefix);
    // The handler fills the view with the first read, then keeps it current
    // (or, at a past revision, with that revision's keys only).
    let (revision, watch) = match args.revision {
        Some(past) => {
            let scope = crate::kv::Scope::new(&args.prefix, true)?;
            let state = crate::history::read_at(&client, &scope, Some(past)).await?;
            let tree: shylock::Tree = state
                .keys
                .into_iter()
                .map(|(key, version)| {
                    let entry = shylock::Entry {
                        value: version.value.into_boxed_slice(),
                        mod_revision: version.mod_revision,
                    };
                    (key, entry)
                })
                .collect();
            handler.handle(TreeEvent::Replaced {
                revision: past,
                tree: &tree,
            });
            (past, None)
        }
        None => {
            let (revision, watch) = client
                .watch_tree(&base, move |event: TreeEvent<'_>| {
                    let revision = match &event {
                        TreeEvent::Changed { revision, .. }
                        | TreeEvent::Replaced { revision, .. } => Some(*revision),
                        _ => None,
                    };
                    handler.handle(event);
                    if let (Some(report), Some(revision)) = (&report, revision) {
                        report.applied(revision);
                    }
                })
                .await?;
            (revision, Some(watch))
        }
    };
    tracing::info!(revision, prefix = %args.prefix, mountpoint = %args.mountpoint.display(), "mounting");

    let owner = Owner {
        uid: args.uid.unwrap_or_else(|| unsafe { libc::getuid() }),
        gid: args.gid.unwrap_or_else(|| unsafe { libc::getgid() }),
        read_only,
        umask: args.umask,
    };
    let settings = fs::Settings {
        base,
        owner,
        conflicts: args.conflicts,
        max_value: args.max_request_bytes.saturating_sub(REQUEST_OVERHEAD),
        write: args.write.clone(),
    };
    let filesystem = fs::EtcdFs::new(
        view,
        client.clone(),
        tokio::runtime::Handle::current(),
        settings,
        invalidations,
    );
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("shylock:{}", args.prefix)),
        MountOption::Subtype("shylock".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        // etcd keeps no access times, and an atime the kernel invalidates
        // after each READ would cost a GETATTR at the next open.
        MountOption::NoAtime,
    ];
    if read_only {
        config.mount_options.push(MountOption::RO);
    }
    if args.allow_other {
        // fuser passes allow_other to the kernel for this ACL.
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(4);
    // SIGTERM and SIGINT are caught from before the mount: one that comes
    // as the mount is made, or just after "mounted" is printed, unmounts
    // cleanly instead of killing the process with the mount left behind.
    let mut stop = crate::signals::Stop::new()?;
    let mountpoint = args.mountpoint.clone();
    let session =
        tokio::task::spawn_blocking(move || fuser::Session::new(filesystem, &mountpoint, &config))
            .await?
            .map_err(|e| {
                msg(format!(
                    "cannot mount on {}: {e}",
                    args.mountpoint.display()
                ))
            })?;
    let _ = notifier.set(session.notifier());
    let background = session.spawn()?;
    println!(
        "shylock: mounted {} on {}",
        args.prefix,
        args.mountpoint.display()
    );

    crate::notify::ready(&format!(
        "{} mounted on {}",
        args.prefix,
        args.mountpoint.display()
    ));
    stop.wait().await;
    crate::reporting::stop(reporter.as_ref()).await;
    tracing::info!("unmounting {}", args.mountpoint.display());
    drop(watch);
    let unmounted = tokio::task::spawn_blocking(move || background.umount_and_join()).await?;
    match unmounted {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            // A file is still open: detach now; the kernel ends the mount
            // when the last user lets go.
            tracing::warn!(mountpoint = %args.mountpoint.display(), "mount busy; detaching it lazily");
            lazy_unmount(&args.mountpoint)
        }
        Err(e) => Err(msg(format!(
            "unmount of {} failed: {e}",
            args.mountpoint.display()
        ))),
    }
}

fn env_true(name: &str) -> bool {
    std::env::var(name)
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

fn check_fuse() -> Result<(), Error> {
    if Path::new("/dev/fuse").exists() {
        Ok(())
    } else {
        Err(msg(
            "FUSE is not available: /dev/fuse is missing. Load the fuse module (modprobe fuse), \
             or run the container with --device /dev/fuse; without FUSE, use `shylock sync`.",
        ))
    }
}

/// Checks the mountpoint; cleans a stale mount left by a killed shylock.
fn prepare_mountpoint(mountpoint: &Path) -> Result<(), Error> {
    let shown = mountpoint.display();
    if is_mount(mountpoint) {
        // stat may be answered from the kernel's cache; listing needs the
        // daemon, so it tells a live mount from a dead one.
        return match std::fs::read_dir(mountpoint) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                tracing::warn!(mountpoint = %shown, "cleaning a stale mount left by a killed process");
                lazy_unmount(mountpoint)
            }
            _ => Err(msg(format!(
                "mountpoint {shown} is busy: something is mounted there; unmount it first \
                 (fusermount3 -u {shown})"
            ))),
        };
    }
    match std::fs::metadata(mountpoint) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(msg(format!("mountpoint {shown} is not a directory"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(msg(format!(
            "mountpoint {shown} does not exist; create it with mkdir"
        ))),
        Err(e) => Err(msg(format!("mountpoint {shown}: {e}"))),
    }
}

/// Whether something is mounted exactly at `path` (from /proc/self/mountinfo).
fn is_mount(path: &Path) -> bool {
    let Ok(path) = path.canonicalize().or_else(|_| std::path::absolute(path)) else {
        return false;
    };
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let wanted = path.to_string_lossy();
    info.lines()
        .any(|line| line.split(' ').nth(4) == Some(&*wanted))
}

fn lazy_unmount(mountpoint: &Path) -> Result<(), Error> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())?;
    // SAFETY: a valid C string; umount2 does not keep it.
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let status = std::process::Command::new("fusermount3")
        .arg("-uz")
        .arg(mountpoint)
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        _ => Err(msg(format!(
            "{} holds a stale mount that could not be removed; run `fusermount3 -uz {}`",
            mountpoint.display(),
            mountpoint.display()
        ))),
    }
}
