//! Parallel-R1 format check, from text (tag strings) or token ids (tag ids), through the one
//! structure parser ([`crate::structure::parse_row`]): text is first turned into a sequence of
//! pseudo-tokens (one per tag, one per run of other text), so both entry points parse the same
//! sequence of tags and give the same answer for the same content.

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::structure::{parse_row, ParallelTags, RowParse};
use crate::tensor::{contiguous, cpu_slice, expect_ndim, integer_as_i64};

/// Default tag spellings, in the order `<Parallel> </Parallel> <Path> </Path> <Summary> </Summary>`.
pub const DEFAULT_TAGS: [&str; 6] = [
    "<Parallel>",
    "</Parallel>",
    "<Path>",
    "</Path>",
    "<Summary>",
    "</Summary>",
];

/// The six tag strings of the text path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagStrings([String; 6]);

impl Default for TagStrings {
    fn default() -> Self {
        Self(DEFAULT_TAGS.map(str::to_owned))
    }
}

impl TagStrings {
    /// Six distinct, non-empty strings. Where two tags match at one position (one is a prefix
    /// of the other), the longer one wins.
    pub fn new(tags: [String; 6]) -> Result<Self> {
        for (k, t) in tags.iter().enumerate() {
            if t.is_empty() {
                return Err(Error::value(
                    format!("tags[{k}]"),
                    "a non-empty tag string",
                    "''",
                ));
            }
            if tags[..k].contains(t) {
                return Err(Error::value(
                    format!("tags[{k}]"),
                    "six distinct tag strings",
                    format!("{t:?} twice"),
                ));
            }
        }
        Ok(Self(tags))
    }

    /// The strings, in constructor order.
    pub fn strings(&self) -> &[String; 6] {
        &self.0
    }
}

/// Pseudo-token ids of the text path: the tags are 0..6, any other text is 6.
const TEXT_ID: i64 = 6;

fn pseudo_tags() -> ParallelTags {
    // Six distinct non-negative ids: cannot fail.
    ParallelTags::new(0, 1, 2, 3, 4, 5).expect("distinct ids")
}

/// Text -> one pseudo-token per tag and per run of text between tags. Linear in the text times
/// the (six, short) tags.
pub fn text_to_pseudo_ids(text: &str, tags: &TagStrings) -> Vec<i64> {
    let firsts: Vec<u8> = tags.0.iter().map(|t| t.as_bytes()[0]).collect();
    let b = text.as_bytes();
    let mut ids = Vec::new();
    let mut in_text = false;
    let mut i = 0;
    while i < b.len() {
        if firsts.contains(&b[i]) && text.is_char_boundary(i) {
            let hit = (0..6)
                .filter(|&k| text[i..].starts_with(tags.0[k].as_str()))
                .max_by_key(|&k| tags.0[k].len());
            if let Some(k) = hit {
                ids.push(k as i64);
                in_text = false;
                i += tags.0[k].len();
                continue;
            }
        }
        if !in_text {
            ids.push(TEXT_ID);
            in_text = true;
        }
        i += 1;
    }
    ids
}

/// The format verdict of one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParallelFormat {
    /// Every block closed with >= 2 paths and a (closed) summary after or inside it, and no
    /// structural error. A response without tags is valid.
    pub valid: bool,
    /// At least one valid block.
    pub uses_parallel: bool,
    /// Blocks found (nested ones included), in order of their `<Parallel>`.
    pub n_blocks: usize,
    /// Paths of each block, same order.
    pub paths: Vec<usize>,
    /// The parser's status name (`ok`, `truncated`, `stray_close`, ...), or `no_summary` when
    /// the structure is fine but a block lacks its summary.
    pub status: &'static str,
}

fn block_ok(b: &crate::structure::Block) -> bool {
    b.end.is_some() && b.paths.len() >= 2 && b.summary.is_some_and(|s| s.close.is_some())
}

/// The verdict from a parse.
pub fn from_parse(row: &RowParse) -> ParallelFormat {
    let all_summaries = row.blocks.iter().all(block_ok);
    let valid = row.is_ok() && all_summaries;
    let status = if row.is_ok() && !all_summaries {
        "no_summary"
    } else {
        row.status.kind.name()
    };
    ParallelFormat {
        valid,
        uses_parallel: row.blocks.iter().any(block_ok),
        n_blocks: row.blocks.len(),
        paths: row.blocks.iter().map(|b| b.paths.len()).collect(),
        status,
    }
}

/// The verdict of one text.
pub fn text_format(text: &str, tags: &TagStrings) -> ParallelFormat {
    from_parse(&parse_row(&text_to_pseudo_ids(text, tags), &pseudo_tags()))
}

/// The verdict of one row of ids (pads already removed).
pub fn ids_format(ids: &[i64], tags: &ParallelTags) -> ParallelFormat {
    from_parse(&parse_row(ids, tags))
}

/// Verdicts of a batch of texts.
pub fn texts_format(
    texts: &[impl AsRef<str> + Sync],
    tags: &TagStrings,
) -> Result<Vec<ParallelFormat>> {
    super::par_map(texts.len(), |i| text_format(texts[i].as_ref(), tags))
}

/// Real (mask != 0) ids of each row of an `[N, L]` integer tensor (any device).
pub fn tensor_rows(ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Vec<Vec<i64>>> {
    expect_ndim(ids, "ids", 2)?;
    let ids64 = contiguous(&integer_as_i64(&ids.f_to_device(Device::Cpu)?, "ids")?);
    let (n, l) = (ids.size()[0] as usize, ids.size()[1] as usize);
    let data = cpu_slice::<i64>(&ids64, "ids")?;
    let mask = match attention_mask {
        None => None,
        Some(m) => {
            if m.size() != ids.size() {
                return Err(Error::shape(
                    "attention_mask",
                    format!("the shape of ids {:?}", ids.size()),
                    format!("shape {:?}", m.size()),
                ));
            }
            let m = m.f_to_device(Device::Cpu)?.f_ne(0)?.f_to_kind(Kind::Int8)?;
            Some(contiguous(&m))
        }
    };
    let mdata = match &mask {
        Some(m) => Some(cpu_slice::<i8>(m, "attention_mask")?),
        None => None,
    };
    Ok((0..n)
        .map(|r| {
            let row = &data[r * l..(r + 1) * l];
            match mdata {
                Some(m) => row
                    .iter()
                    .zip(&m[r * l..(r + 1) * l])
                    .filter(|(_, &k)| k != 0)
                    .map(|(&id, _)| id)
                    .collect(),
                None => row.to_vec(),
            }
        })
        .collect())
}

/// Verdicts of a batch of id rows.
pub fn rows_format(rows: &[Vec<i64>], tags: &ParallelTags) -> Result<Vec<ParallelFormat>> {
    super::par_map(rows.len(), |i| ids_format(&rows[i], tags))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> ParallelFormat {
        text_format(s, &TagStrings::default())
    }

    #[test]
    fn layouts_and_errors() {
        let a = f("x<Parallel><Path>a</Path>\n<Path>b</Path></Parallel>\n<Summary>s</Summary> y");
        assert!(a.valid && a.uses_parallel);
        assert_eq!((a.n_blocks, a.paths.clone()), (1, vec![2]));
        let b = f("<Parallel><Path>a</Path><Path>b</Path><Summary>s</Summary></Parallel>");
        assert!(b.valid && b.uses_parallel);
        let none = f("just text, Final Answer: 3");
        assert!(none.valid && !none.uses_parallel && none.n_blocks == 0);
        let single = f("<Parallel><Path>a</Path></Parallel><Summary>s</Summary>");
        assert!(!single.valid && single.status == "single_path");
        let no_summary = f("<Parallel><Path>a</Path><Path>b</Path></Parallel> done");
        assert!(!no_summary.valid && !no_summary.uses_parallel);
        assert_eq!(no_summary.status, "no_summary");
        let open = f("<Parallel><Path>a</Path><Path>b");
        assert!(!open.valid && open.status == "truncated");
        let stray = f("text </Path>");
        assert!(!stray.valid && stray.status == "stray_close" && stray.n_blocks == 0);
        let only_tags = f("</Parallel></Parallel><Path>");
        assert!(!only_tags.valid);
    }

    #[test]
    fn text_and_ids_agree() {
        let t = "a<Parallel><Path>p</Path><Path>q</Path></Parallel><Summary>s</Summary>";
        let ids: Vec<i64> = vec![10, 1, 3, 11, 4, 3, 12, 4, 2, 5, 13, 6];
        let tags = ParallelTags::new(1, 2, 3, 4, 5, 6).unwrap();
        assert_eq!(f(t), ids_format(&ids, &tags));
    }
}
