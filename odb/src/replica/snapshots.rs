//! The versions at which snapshots are open, with how many are open at each.

use super::Version;

/// Open snapshots by version, ascending. A few are open at a time, almost always at the newest
/// version: a sorted vector that keeps its capacity avoids allocating a map node each time a
/// transaction opens the first snapshot and freeing it when it closes.
#[derive(Debug, Default)]
pub(super) struct OpenSnapshots {
    at: Vec<(Version, usize)>,
}

impl OpenSnapshots {
    /// Registers one more snapshot at `version`.
    pub fn open(&mut self, version: Version) {
        match self.at.binary_search_by_key(&version, |(v, _)| *v) {
            Ok(i) => self.at[i].1 += 1,
            Err(i) => self.at.insert(i, (version, 1)),
        }
    }

    /// Releases one snapshot at `version`; returns whether it was the last one there.
    pub fn close(&mut self, version: Version) -> bool {
        let Ok(i) = self.at.binary_search_by_key(&version, |(v, _)| *v) else {
            return false;
        };
        self.at[i].1 -= 1;
        if self.at[i].1 > 0 {
            return false;
        }
        self.at.remove(i);
        true
    }

    /// The oldest version a snapshot is open at.
    pub fn oldest(&self) -> Option<Version> {
        self.at.first().map(|(v, _)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_snapshots_per_version_and_knows_the_oldest() {
        let mut open = OpenSnapshots::default();
        assert_eq!(open.oldest(), None);
        open.open(Version::test(5));
        open.open(Version::test(3));
        open.open(Version::test(5));
        assert_eq!(open.oldest(), Some(Version::test(3)));
        assert!(!open.close(Version::test(5)));
        assert!(!open.close(Version::test(4)), "nothing was open there");
        assert!(open.close(Version::test(3)));
        assert_eq!(open.oldest(), Some(Version::test(5)));
        assert!(open.close(Version::test(5)));
        assert_eq!(open.oldest(), None);
    }
}
