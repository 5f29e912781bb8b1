//! `shylock diff PREFIX REV_A [REV_B]`: a unified diff of the keys under a
//! prefix between two revisions (the second defaults to now), one line per
//! key (`key = value`, newlines in values written `\n`), or with
//! `--format` of the document `shylock export` makes of the prefix.

use crate::connect::ConnectArgs;
use crate::document::{self, Format};
use crate::exit::{usage, Error};
use crate::history::{read_at, State};
use crate::kv::Scope;

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The prefix (a path: the key and the keys under PREFIX/).
    pub prefix: String,

    /// The revision to compare from.
    pub from: i64,

    /// The revision to compare to [default: now].
    pub to: Option<i64>,

    /// Diff the document `shylock export --format` makes of the prefix
    /// (keys relative to it) instead of one line per key.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

pub async fn run(connect: &ConnectArgs, args: DiffArgs) -> Result<(), Error> {
    let scope = Scope::new(&args.prefix, true)?;
    if args.format == Some(Format::Raw) {
        return Err(usage(
            "--format raw is one key's value; diff a prefix as json, yaml, toml, properties or env",
        ));
    }
    let client = shylock::Client::connect(connect.options()?).await?;
    let old = read_at(&client, &scope, Some(args.from)).await?;
    let new = read_at(&client, &scope, args.to).await?;
    let (old_text, new_text) = match args.format {
        Some(format) => (
            exported(&old, &scope, format)?,
            exported(&new, &scope, format)?,
        ),
        None => (lines(&old), lines(&new)),
    };
    let diff = similar::TextDiff::from_lines(old_text.as_str(), new_text.as_str());
    let to = args.to.unwrap_or(new.revision);
    print!(
        "{}",
        diff.unified_diff().context_radius(2).header(
            &format!("{}@{}", args.prefix, args.from),
            &format!("{}@{to}", args.prefix)
        )
    );
    Ok(())
}

/// One line per key.
fn lines(state: &State) -> String {
    let mut out = String::new();
    for (key, version) in &state.keys {
        let value = String::from_utf8_lossy(&version.value)
            .replace('\\', "\\\\")
            .replace('\n', "\\n");
        out.push_str(&format!("{key} = {value}\n"));
    }
    out
}

/// The document of the keys under the prefix (an empty text for none).
fn exported(state: &State, scope: &Scope, format: Format) -> Result<String, Error> {
    let children = scope.children();
    let relative: Vec<(String, Vec<u8>)> = state
        .keys
        .iter()
        .filter_map(|(key, version)| {
            let name = key.strip_prefix(&children)?;
            Some((name.to_owned(), version.value.clone()))
        })
        .collect();
    if relative.is_empty() {
        return Ok(String::new());
    }
    let bytes = document::render(&relative, format)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
