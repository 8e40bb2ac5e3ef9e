//! The six tag token ids of a parallel-thinking block.

use crate::error::{Error, Result};

/// Which tag a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tag {
    /// `<Parallel>`: opens a block.
    Parallel,
    /// `</Parallel>`: closes the innermost open block.
    ParallelEnd,
    /// `<Path>`: starts the next path of the innermost open block.
    Path,
    /// `</Path>`: closes the open path of the innermost block.
    PathEnd,
    /// `<Summary>`: starts a summary (inside a block: the block's tail, layout B).
    Summary,
    /// `</Summary>`: ends a summary.
    SummaryEnd,
}

/// The token ids of the six tags (`<Parallel> </Parallel> <Path> </Path> <Summary> </Summary>`).
///
/// Ids are distinct and non-negative; [`ParallelTags::new`] checks both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParallelTags {
    ids: [i64; 6],
    lo: i64,
    hi: i64,
}

/// Argument names of the six ids, in constructor order (used in error messages).
pub const TAG_NAMES: [&str; 6] = [
    "parallel",
    "parallel_end",
    "path",
    "path_end",
    "summary",
    "summary_end",
];

const TAGS: [Tag; 6] = [
    Tag::Parallel,
    Tag::ParallelEnd,
    Tag::Path,
    Tag::PathEnd,
    Tag::Summary,
    Tag::SummaryEnd,
];

impl ParallelTags {
    /// Tag ids in the order `<Parallel> </Parallel> <Path> </Path> <Summary> </Summary>`.
    ///
    /// Fails with a value error naming the argument when an id is negative or repeated.
    pub fn new(
        parallel: i64,
        parallel_end: i64,
        path: i64,
        path_end: i64,
        summary: i64,
        summary_end: i64,
    ) -> Result<Self> {
        let ids = [parallel, parallel_end, path, path_end, summary, summary_end];
        for (k, &id) in ids.iter().enumerate() {
            if id < 0 {
                return Err(Error::value(TAG_NAMES[k], "a non-negative token id", id));
            }
            if let Some(first) = ids[..k].iter().position(|&other| other == id) {
                return Err(Error::value(
                    TAG_NAMES[k],
                    format!("a token id different from `{}`", TAG_NAMES[first]),
                    format!("{id}, the same id"),
                ));
            }
        }
        let lo = *ids.iter().min().unwrap_or(&0);
        let hi = *ids.iter().max().unwrap_or(&0);
        Ok(Self { ids, lo, hi })
    }

    /// The six ids, in constructor order.
    pub fn ids(&self) -> [i64; 6] {
        self.ids
    }

    /// The id of `tag`.
    pub fn id(&self, tag: Tag) -> i64 {
        self.ids[TAGS.iter().position(|&t| t == tag).unwrap_or(0)]
    }

    /// True when `id` lies in the range spanned by the tag ids (a tag or not): one unsigned
    /// comparison, so loops over it vectorise.
    #[inline(always)]
    pub fn in_range(&self, id: i64) -> bool {
        (id.wrapping_sub(self.lo) as u64) <= (self.hi.wrapping_sub(self.lo) as u64)
    }

    /// Which tag `id` is, if any.
    #[inline]
    pub fn classify(&self, id: i64) -> Option<Tag> {
        // Most tokens are not tags; one range check keeps the common case to two comparisons.
        if id < self.lo || id > self.hi {
            return None;
        }
        self.ids.iter().position(|&t| t == id).map(|k| TAGS[k])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_and_validate() {
        let t = ParallelTags::new(10, 11, 12, 13, 14, 15).unwrap();
        assert_eq!(t.classify(12), Some(Tag::Path));
        assert_eq!(t.classify(15), Some(Tag::SummaryEnd));
        assert_eq!(t.classify(9), None);
        assert_eq!(t.classify(16), None);
        assert_eq!(t.id(Tag::Summary), 14);
        let dup = ParallelTags::new(1, 2, 3, 3, 5, 6).unwrap_err().to_string();
        assert!(
            dup.contains("`path_end`") && dup.contains("`path`"),
            "{dup}"
        );
        let neg = ParallelTags::new(1, 2, 3, 4, -5, 6)
            .unwrap_err()
            .to_string();
        assert!(neg.contains("`summary`") && neg.contains("-5"), "{neg}");
    }
}
