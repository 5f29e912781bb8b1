//! Directory listings whose offsets mean the same in every listing of a
//! directory, so that the kernel may keep listings (FOPEN_CACHE_DIR).
//!
//! A listing is read in pieces: each READDIR(PLUS) asks for the entries
//! after an offset, the cookie of the last entry the kernel took. The
//! kernel's cached listing and a handle's own reads mix pieces made at
//! different times (a reader takes the cached part, then asks the daemon for
//! the rest), so a cookie cannot be a position in one snapshot: a name added
//! or removed before it would shift every later entry, and a name that did
//! not change could be skipped or shown twice. Here a cookie comes from the
//! name alone (a keyed hash, the keys chosen at random per mount), entries
//! go in cookie order, and "after cookie c" means the names whose cookie is
//! greater: every name present throughout shows exactly once, however the
//! pieces were made. Each piece is made from the view as it is when asked.
//!
//! Two names of a directory whose 62-bit hashes meet get consecutive
//! cookies; only such a pair, in a listing read while a name around it
//! changes, could shift (odds of about n² / 2^63 for n names).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

use fuser::FileType;

use super::view::{Node, View};

/// The cookies of `.` and `..`; a name's cookie is above both.
const DOT: u64 = 1;
const DOTDOT: u64 = 2;

/// One entry of a listing.
pub struct Listed {
    /// The offset that asks for the entries after this one.
    pub cookie: u64,
    pub kind: FileType,
    pub name: OsString,
    /// `None` for `.` and `..`.
    pub node: Option<Node>,
}

/// How many directories' listings are kept between the pieces they are
/// read in (a large directory takes many).
const KEPT: usize = 8;

/// A directory's entries from one state of the view, in cookie order.
struct Made {
    prefix: String,
    generation: u64,
    entries: Arc<[Listed]>,
}

/// The per-mount key of the names' hash, and the last listings made.
#[derive(Default)]
pub struct Cookies {
    key: RandomState,
    made: Mutex<VecDeque<Made>>,
}

/// The entries of a listing after an offset.
pub struct Page {
    entries: Arc<[Listed]>,
    start: usize,
}

impl Page {
    pub fn iter(&self) -> impl Iterator<Item = &Listed> {
        self.entries[self.start..].iter()
    }
}

impl Cookies {
    fn of(&self, name: &OsString) -> u64 {
        DOTDOT + 1 + (self.key.hash_one(name) >> 2)
    }

    /// The entries of directory `prefix` whose cookie is above `offset`, in
    /// cookie order, as the view holds them now.
    pub fn after(&self, view: &View, prefix: &str, offset: u64) -> Page {
        let entries = self.listing(view, prefix);
        let start = entries.partition_point(|l| l.cookie <= offset);
        Page { entries, start }
    }

    /// The whole listing, made again only when the view changed.
    fn listing(&self, view: &View, prefix: &str) -> Arc<[Listed]> {
        let generation = view.generation();
        let mut made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
        made.retain(|m| m.generation == generation);
        if let Some(m) = made.iter().find(|m| m.prefix == prefix) {
            return m.entries.clone();
        }
        let entries = self.make(view, prefix);
        if made.len() == KEPT {
            made.pop_front();
        }
        made.push_back(Made {
            prefix: prefix.to_owned(),
            generation,
            entries: entries.clone(),
        });
        entries
    }

    fn make(&self, view: &View, prefix: &str) -> Arc<[Listed]> {
        let mut names: Vec<(u64, OsString, Node)> = view
            .children(prefix)
            .into_iter()
            .map(|e| (self.of(&e.name), e.name, e.node))
            .collect();
        names.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        let dots = [(DOT, "."), (DOTDOT, "..")].map(|(cookie, name)| Listed {
            cookie,
            kind: FileType::Directory,
            name: name.into(),
            node: None,
        });
        let mut last = DOTDOT;
        let named = names.into_iter().map(|(hash, name, node)| {
            last = hash.max(last + 1);
            Listed {
                cookie: last,
                kind: match node {
                    Node::Dir(_) => FileType::Directory,
                    Node::File(_) => FileType::RegularFile,
                },
                name,
                node: Some(node),
            }
        });
        dots.into_iter().chain(named).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(keys: &[String]) -> View {
        View::new(keys.iter().map(|k| (k.clone(), b"v".to_vec(), 1)))
    }

    fn names<'a>(listed: impl IntoIterator<Item = &'a Listed>) -> Vec<String> {
        listed
            .into_iter()
            .map(|l| l.name.to_string_lossy().into_owned())
            .collect()
    }

    fn all(cookies: &Cookies, view: &View, prefix: &str, offset: u64) -> Vec<Listed> {
        cookies
            .after(view, prefix, offset)
            .iter()
            .map(|l| Listed {
                cookie: l.cookie,
                kind: l.kind,
                name: l.name.clone(),
                node: l.node.clone(),
            })
            .collect()
    }

    /// A listing read in two pieces, the second from a view where names
    /// came and went before and after the point it resumes from, shows
    /// every name present in both exactly once.
    #[test]
    fn a_listing_resumed_after_changes_shows_each_kept_name_once() {
        let cookies = Cookies::default();
        let before: Vec<String> = (0..200).map(|i| format!("k{i:03}")).collect();
        // Every third name goes, and as many new ones come.
        let after: Vec<String> = before
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(_, k)| k.clone())
            .chain((0..70).map(|i| format!("new{i:02}")))
            .collect();
        let (old, new) = (view(&before), view(&after));
        for split in [0, 1, 2, 3, 50, 100, 150, 201, 202] {
            let first = all(&cookies, &old, "", 0);
            let first = &first[..split.min(first.len())];
            let resume = first.last().map_or(0, |l| l.cookie);
            let mut seen = names(first);
            seen.extend(names(cookies.after(&new, "", resume).iter()));
            for kept in &after[..after.len() - 70] {
                let times = seen.iter().filter(|n| *n == kept).count();
                assert_eq!(times, 1, "{kept} at split {split}: {seen:?}");
            }
            assert_eq!(seen.iter().filter(|n| *n == ".").count(), 1);
            assert_eq!(seen.iter().filter(|n| *n == "..").count(), 1);
        }
    }

    #[test]
    fn a_listing_is_made_again_after_a_change() {
        let cookies = Cookies::default();
        let mut v = view(&["d/a".to_owned()]);
        assert_eq!(names(cookies.after(&v, "d/", 0).iter()), [".", "..", "a"]);
        v.set("d/b", Some((b"v".to_vec(), 2)));
        let mut seen = names(cookies.after(&v, "d/", 0).iter());
        seen.sort();
        assert_eq!(seen, [".", "..", "a", "b"]);
        v.add_local_dir("d/c/".to_owned());
        assert_eq!(cookies.after(&v, "d/", 0).iter().count(), 5);
        v.set("d/a", None);
        assert_eq!(cookies.after(&v, "d/", 0).iter().count(), 4);
    }

    #[test]
    fn cookies_rise_and_resume_where_they_stopped() {
        let cookies = Cookies::default();
        let keys: Vec<String> = (0..50).map(|i| format!("d/f{i}")).collect();
        let v = view(&keys);
        let whole = all(&cookies, &v, "d/", 0);
        assert_eq!(whole.len(), 52);
        assert!(whole.windows(2).all(|w| w[0].cookie < w[1].cookie));
        assert_eq!(names(&whole[..2]), [".", ".."]);
        let rest = cookies.after(&v, "d/", whole[20].cookie);
        assert_eq!(names(rest.iter()), names(&whole[21..]));
        assert_eq!(cookies.after(&v, "d/", whole[51].cookie).iter().count(), 0);
    }
}
