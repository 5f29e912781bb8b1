//! `shylock render`: confd-style template resources, rendered from etcd.
//!
//! One watch stream follows the keys of every resource; a change renders
//! only the resources whose keys it touched, after their `wait` quiescence,
//! as one batch in which resources sharing a `reload_cmd` reload once. A
//! failed render, check or reload is retried with backoff until it succeeds
//! or the keys change again. SIGHUP re-reads the confdir.
//!
//! confd's confdirs, templates, flags and confd.toml are read unchanged
//! (`confd_config`); `--check-confd` reports what would not work before a
//! switch (`check`).

mod apply;
mod cache;
mod check;
mod confd;
mod confd_config;
mod glob;
mod gotemplate;
mod gotime;
mod jinja;
mod resource;
mod store;
mod template;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use crate::connect::ConnectArgs;
use crate::exit::{msg, Error};
use crate::live_keys::LiveKeys;
pub use apply::Mode;
pub use confd_config::confd_argv;
use confd_config::Settings;
use resource::{Resource, Wait};

/// confd's flags are accepted as confd spells them (`-onetime`, `-node x`,
/// `-prefix=/p`), with confd's meanings.
#[derive(Clone, Debug, clap::Args)]
pub struct RenderArgs {
    /// The directory holding conf.d/**/*.toml resources and templates/
    /// [default: confdir in confd.toml, else /etc/shylock].
    #[arg(long)]
    pub confdir: Option<PathBuf>,

    /// confd's config file [default: <confdir>/confd.toml, if it exists].
    #[arg(long)]
    pub config_file: Option<PathBuf>,

    /// Render every resource once, run checks and reloads, and exit; the exit
    /// status is non-zero if any resource failed.
    #[arg(long)]
    pub onetime: bool,

    /// Print a diff of what would change; touch nothing, run nothing.
    #[arg(long)]
    pub noop: bool,

    /// Write files but run no check or reload command.
    #[arg(long)]
    pub sync_only: bool,

    /// confd's key prefix: replaces every resource's own `prefix`.
    #[arg(long)]
    pub prefix: Option<String>,

    /// Follow changes (confd's -watch). shylock always watches; this also
    /// turns off -interval's periodic renders.
    #[arg(long)]
    pub watch: bool,

    /// Without --watch: render every resource again this often, in
    /// seconds, besides on every change (confd polls at this interval).
    #[arg(long, value_name = "SECONDS")]
    pub interval: Option<u64>,

    /// Leave the staged file in place when a check fails, and with
    /// --noop write it (confd's -keep-stage-file).
    #[arg(long)]
    pub keep_stage_file: bool,

    /// confd's backend: "etcdv3" or "etcd" (both etcd's v3 API, as in
    /// confd); any other is an error.
    #[arg(long)]
    pub backend: Option<String>,

    /// Find the etcd endpoints from DNS SRV records of
    /// _<backend>._tcp.<domain>.
    #[arg(long)]
    pub srv_domain: Option<String>,

    /// Find the etcd endpoints from this SRV record.
    #[arg(long)]
    pub srv_record: Option<String>,

    /// Scheme of endpoints found through SRV records: http or https.
    #[arg(long)]
    pub scheme: Option<String>,

    /// Accepted for confd's command lines; the user and password are used
    /// whenever they are given.
    #[arg(long)]
    pub basic_auth: bool,

    /// Reading a key outside a resource's `keys` is an error in every
    /// resource (as `strict = true` makes it in one), not a warning.
    #[arg(long)]
    pub strict: bool,

    /// Check a confd confdir without connecting to etcd: parse every
    /// resource and template and report what would not work.
    #[arg(long, value_name = "CONFDIR")]
    pub check_confd: Option<PathBuf>,

    /// Quiescence before rendering, for resources without their own `wait`:
    /// this long after the last change ...
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub wait_min: Duration,

    /// ... but no longer than this after the first.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub wait_max: Duration,

    /// Time limit of each check and reload command.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub command_timeout: Duration,

    /// First delay before retrying a failed resource (doubling each time).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_min: Duration,

    /// Longest delay between retries.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub retry_max: Duration,

    /// A template may run this many engine steps per render, then fails
    /// (a loop over a huge `seq` or a runaway recursion cannot hang the
    /// daemon).
    #[arg(long, default_value_t = 50_000_000)]
    pub max_render_steps: u64,

    /// Largest file a template may render, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_output_bytes: usize,

    /// Time limit of one render.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub render_timeout: Duration,

    #[command(flatten)]
    pub report: crate::reporting::ReportArgs,
}

impl RenderArgs {
    fn limits(&self) -> template::Limits {
        template::Limits {
            steps: self.max_render_steps,
            output_bytes: self.max_output_bytes,
            time: self.render_timeout,
        }
    }
}

/// Where one resource stands.
#[derive(Default)]
struct State {
    /// Keys changed at the first and last of these instants, not rendered yet.
    dirty: Option<(Instant, Instant)>,
    /// A failed attempt is retried at this instant.
    retry: Option<(Instant, Duration)>,
    /// The file changed and its reload has not succeeded yet.
    needs_reload: bool,
    /// Why the last attempt failed, until one succeeds.
    error: Option<String>,
}

pub async fn run(connect: &ConnectArgs, args: RenderArgs) -> Result<(), Error> {
    if let Some(confdir) = &args.check_confd {
        return check::run(confdir, &args);
    }
    let settings = confd_config::settings(connect, &args)?;
    let mode = match (settings.noop, settings.sync_only) {
        (true, _) => Mode::Noop,
        (false, true) => Mode::SyncOnly,
        (false, false) => Mode::Write,
    };
    let mut resources = load(&settings, &args)?;
    let client = shylock::Client::connect(settings.connect.options()?).await?;
    let mut live = LiveKeys::follow_many(&client, &watched(&resources), true).await?;
    let mut states: Vec<State> = resources.iter().map(|_| State::default()).collect();

    if args.onetime || settings.noop {
        let all: Vec<usize> = (0..resources.len()).collect();
        let (failed, _) = batch(&resources, &mut states, &all, &live, mode, &args).await;
        let text = format!(
            "{failed} of {} template resource(s) failed",
            resources.len()
        );
        return match failed {
            0 => Ok(()),
            n if n < resources.len() => Err(Box::new(crate::exit::Partial(text))),
            _ => Err(msg(text)),
        };
    }

    let reporter = args.report.start(&client, "render")?;
    let mut reports = reports(reporter.as_ref(), &resources);
    let mut stop = crate::signals::Stop::new()?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let now = Instant::now();
    for state in &mut states {
        state.dirty = Some((now, now));
    }
    // confd's -interval: every resource again this often.
    let mut poll = settings
        .interval
        .map(|every| tokio::time::interval_at(now + every, every));
    loop {
        let now = Instant::now();
        let due: Vec<usize> = (0..resources.len())
            .filter(|&i| {
                next_due(&states[i], wait_of(&resources[i], &args)).is_some_and(|at| at <= now)
            })
            .collect();
        if !due.is_empty() {
            // SIGTERM ends a render or command at once: nothing is
            // installed after it (a staged file is removed as it drops).
            tokio::select! {
                (failed, revision) = batch(&resources, &mut states, &due, &live, mode, &args) => {
                    publish(&reports, &resources, &states, revision);
                    // Ready once every resource had its first render
                    // (a failed one is retried; the status names it).
                    if states.iter().all(|s| s.dirty.is_none()) {
                        crate::notify::ready(&format!("{} resources rendered", resources.len()));
                    }
                    crate::notify::status(&match failed {
                        0 => format!("rendered {} resource(s)", due.len()),
                        n => format!("{n} resource(s) failed; retrying"),
                    });
                    continue;
                }
                () = stop.wait() => {
                    crate::reporting::stop(reporter.as_ref()).await;
                    return Ok(());
                }
            }
        }
        let next = (0..resources.len())
            .filter_map(|i| next_due(&states[i], wait_of(&resources[i], &args)))
            .min();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let tick = async {
            match &mut poll {
                Some(poll) => poll.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = live.changed() => {
                let keys = changed.ok_or_else(|| msg("the watch ended"))?;
                let now = Instant::now();
                for (resource, state) in resources.iter().zip(&mut states) {
                    if keys.iter().any(|k| resource.uses(k)) {
                        let first = state.dirty.map_or(now, |(first, _)| first);
                        state.dirty = Some((first, now));
                        // New keys: render on the normal path, not the retry's.
                        state.retry = None;
                    }
                }
            }
            () = sleep => {}
            now = tick => {
                for state in &mut states {
                    state.dirty.get_or_insert((now, now));
                }
            }
            _ = hangup.recv() => match load(&settings, &args) {
                Ok(new) => {
                    tracing::info!(resources = new.len(), "SIGHUP: confdir re-read");
                    if watched(&new) != watched(&resources) {
                        live = LiveKeys::follow_many(&client, &watched(&new), true).await?;
                    }
                    resources = new;
                    reports = self::reports(reporter.as_ref(), &resources);
                    let now = Instant::now();
                    states = resources.iter().map(|_| State { dirty: Some((now, now)), ..State::default() }).collect();
                }
                Err(error) => tracing::error!(%error, "SIGHUP: confdir not reloaded; keeping the current one"),
            },
            () = stop.wait() => {
                    crate::reporting::stop(reporter.as_ref()).await;
                    return Ok(());
                }
        }
    }
}

/// The confdir's resources, as the settings and flags apply to them.
fn load(settings: &Settings, args: &RenderArgs) -> Result<Vec<Resource>, Error> {
    let mut resources = resource::load(&settings.confdir, settings.global_prefix())?;
    for resource in &mut resources {
        resource.strict |= args.strict;
    }
    Ok(resources)
}

/// Every full prefix watched, without ones another covers.
fn watched(resources: &[Resource]) -> Vec<String> {
    let mut all: Vec<String> = resources
        .iter()
        .flat_map(|r| r.watched().iter().cloned())
        .collect();
    all.sort();
    all.dedup();
    let copy = all.clone();
    all.retain(|p| !copy.iter().any(|q| q != p && resource::covers(q, p)));
    all
}

fn wait_of(resource: &Resource, args: &RenderArgs) -> Wait {
    resource.wait.unwrap_or(Wait {
        min: args.wait_min,
        max: args.wait_max.max(args.wait_min),
    })
}

/// When a resource should next be rendered, if at all.
fn next_due(state: &State, wait: Wait) -> Option<Instant> {
    let dirty = state
        .dirty
        .map(|(first, last)| (last + wait.min).min(first + wait.max));
    let retry = state.retry.map(|(at, _)| at);
    match (dirty, retry) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Renders the given resources as one batch; reload commands shared by
/// several of them run once. Returns how many failed.
async fn batch(
    resources: &[Resource],
    states: &mut [State],
    due: &[usize],
    live: &LiveKeys,
    mode: Mode,
    args: &RenderArgs,
) -> (usize, i64) {
    // One copy of the keys for the whole batch.
    let (keys, revision) = live.snapshot_at();
    let mut failed = vec![false; resources.len()];
    let mut reloads: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &i in due {
        let (resource, state) = (&resources[i], &mut states[i]);
        state.dirty = None;
        match apply::install(resource, &keys, mode, args).await {
            Ok(changed) => {
                crate::telemetry::rendered(&resource.name, true);
                state.needs_reload |= changed && mode == Mode::Write;
                state.error = None;
            }
            Err(error) => {
                crate::telemetry::rendered(&resource.name, false);
                tracing::error!(resource = %resource.name, %error, "not rendered; the old file stays");
                state.error = Some(format!("{}: {error}", resource.name));
                failed[i] = true;
            }
        }
        if let (true, Some(reload)) = (state.needs_reload, &resource.reload_cmd) {
            reloads.entry(reload).or_default().push(i);
        } else {
            state.needs_reload = false;
        }
    }
    for (reload, users) in reloads {
        match crate::command::run("reload_cmd", reload, args.command_timeout).await {
            Ok(()) => {
                tracing::info!(command = reload, resources = users.len(), "reloaded");
                for i in users {
                    states[i].needs_reload = false;
                }
            }
            Err(error) => {
                tracing::error!(%error, "reload failed; it will be retried");
                for i in users {
                    failed[i] = true;
                    states[i].error = Some(format!("{}: {error}", resources[i].name));
                }
            }
        }
    }
    let now = Instant::now();
    for &i in due {
        let state = &mut states[i];
        state.retry = if failed[i] {
            let backoff = state
                .retry
                .map_or(args.retry_min, |(_, b)| (b * 2).min(args.retry_max));
            Some((now + backoff, backoff))
        } else {
            None
        };
    }
    (failed.iter().filter(|f| **f).count(), revision)
}

/// One report per resource prefix (`--report`).
type Reports = BTreeMap<String, shylock::Report>;

fn reports(reporter: Option<&shylock::Reporter>, resources: &[Resource]) -> Reports {
    let Some(reporter) = reporter else {
        return Reports::new();
    };
    let mut reports = Reports::new();
    for resource in resources {
        reports.entry(resource.prefix.clone()).or_insert_with(|| {
            let dependencies: Vec<shylock::Dependency> = resources
                .iter()
                .filter(|r| r.prefix == resource.prefix)
                .flat_map(|r| r.scopes.iter())
                .map(|scope| shylock::Dependency {
                    key: scope.clone(),
                    kind: shylock::DependencyKind::Prefix,
                    secret: false,
                    required: false,
                })
                .collect();
            reporter.report(&resource.prefix, &dependencies)
        });
    }
    reports
}

/// After a batch: a prefix whose resources all rendered runs `revision`;
/// one with a failed resource rejected it, with the reasons.
fn publish(reports: &Reports, resources: &[Resource], states: &[State], revision: i64) {
    for (prefix, report) in reports {
        let errors: Vec<&str> = resources
            .iter()
            .zip(states)
            .filter(|(r, _)| &r.prefix == prefix)
            .filter_map(|(_, s)| s.error.as_deref())
            .collect();
        if errors.is_empty() {
            report.applied(revision);
        } else {
            report.rejected(revision, &errors.join("; "));
        }
    }
}
