//! Token ids to text in Rust: a `tokenizer.json` loaded once with the `tokenizers` crate, rows
//! decoded in parallel in r1kit's pool (the whole path from ids to reward stays in Rust).

use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::tensor::{contiguous, cpu_slice, expect_ndim, integer_as_i64, kind_name, kind_of};

/// Per token id: its bytes under the ByteLevel decoder and whether it is a special token.
type ByteTable = Vec<Option<(Box<[u8]>, bool)>>;

/// A tokenizer used only to decode (`tokenizer.json`).
pub struct TokenDecoder {
    tokenizer: tokenizers::Tokenizer,
    /// For byte-level BPE tokenizers (GPT-2, Llama 3, Qwen): each id's bytes and whether it is a
    /// special token, so a row decodes by concatenation (what the ByteLevel decoder computes,
    /// checked token by token against the `tokenizers` crate when the table is built).
    bytes: Option<ByteTable>,
    /// Apply transformers' `clean_up_tokenization` after decoding (HF's
    /// `clean_up_tokenization_spaces=True`), so text equals `batch_decode`'s.
    clean_up_spaces: bool,
}

impl std::fmt::Debug for TokenDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenDecoder")
            .field("vocab_size", &self.vocab_size())
            .field("clean_up_spaces", &self.clean_up_spaces)
            .finish()
    }
}

fn first_line(e: impl std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or("").to_string()
}

impl TokenDecoder {
    /// Loads `tokenizer.json` from a file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| {
            Error::value(
                "path",
                "a readable tokenizer.json file",
                format!("{:?} ({})", path.display().to_string(), first_line(e)),
            )
        })?;
        let json = String::from_utf8(bytes).map_err(|_| {
            Error::value(
                "path",
                "a tokenizer.json file (UTF-8 JSON)",
                format!("{:?}, which is not UTF-8 text", path.display().to_string()),
            )
        })?;
        Self::from_json(&json, false)
    }

    /// Loads a serialized tokenizer (the content of a `tokenizer.json`).
    pub fn from_json(json: &str, clean_up_spaces: bool) -> Result<Self> {
        let tokenizer: tokenizers::Tokenizer = json.parse().map_err(|e| {
            Error::value(
                "tokenizer",
                "a valid tokenizer.json",
                format!("one that does not load ({})", first_line(e)),
            )
        })?;
        let bytes = byte_table(&tokenizer);
        Ok(Self {
            tokenizer,
            bytes,
            clean_up_spaces,
        })
    }

    /// Number of ids the tokenizer knows (added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The id of `token` if it is one token of the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// Decodes one row. Ids outside `0..2^32` and ids the vocabulary lacks are skipped; bytes that
    /// are not valid UTF-8 become U+FFFD. Never fails: a row the decoder refuses gives "".
    pub fn decode_row(&self, ids: impl Iterator<Item = i64>, skip_special_tokens: bool) -> String {
        if let Some(table) = &self.bytes {
            let mut buf = Vec::new();
            for id in ids {
                let entry = usize::try_from(id)
                    .ok()
                    .and_then(|i| table.get(i)?.as_ref());
                if let Some((b, special)) = entry {
                    if !(skip_special_tokens && *special) {
                        buf.extend_from_slice(b);
                    }
                }
            }
            let text = String::from_utf8_lossy(&buf);
            return if self.clean_up_spaces {
                clean_up_tokenization(&text)
            } else {
                text.into_owned()
            };
        }
        let ids: Vec<u32> = ids.filter_map(|id| u32::try_from(id).ok()).collect();
        let text = self
            .tokenizer
            .decode(&ids, skip_special_tokens)
            .unwrap_or_default();
        if self.clean_up_spaces {
            clean_up_tokenization(&text)
        } else {
            text
        }
    }

    /// Decodes ragged rows.
    pub fn decode_lists(
        &self,
        rows: &[Vec<i64>],
        skip_special_tokens: bool,
    ) -> Result<Vec<String>> {
        super::par_map(rows.len(), |i| {
            self.decode_row(rows[i].iter().copied(), skip_special_tokens)
        })
    }

    /// Decodes `[N, L]` integer ids (any device), keeping the positions where `attention_mask`
    /// (same shape, any dtype; nonzero = real token) is set.
    pub fn decode_tensor(
        &self,
        ids: &Tensor,
        attention_mask: Option<&Tensor>,
        skip_special_tokens: bool,
    ) -> Result<Vec<String>> {
        expect_ndim(ids, "ids", 2)?;
        let ids64 = contiguous(&integer_as_i64(&ids.f_to_device(Device::Cpu)?, "ids")?);
        let (n, l) = (ids.size()[0] as usize, ids.size()[1] as usize);
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
                let kind = kind_of(m, "attention_mask")?;
                if matches!(kind, Kind::ComplexFloat | Kind::ComplexDouble) {
                    return Err(Error::dtype(
                        "attention_mask",
                        "a bool, integer or float tensor",
                        kind_name(kind),
                    ));
                }
                let m = m.f_to_device(Device::Cpu)?.f_ne(0)?.f_to_kind(Kind::Int8)?;
                Some(contiguous(&m))
            }
        };
        let data = cpu_slice::<i64>(&ids64, "ids")?;
        let mask_data = match &mask {
            Some(m) => Some(cpu_slice::<i8>(m, "attention_mask")?),
            None => None,
        };
        super::par_map(n, |r| {
            let row = &data[r * l..(r + 1) * l];
            match mask_data {
                Some(m) => {
                    let mrow = &m[r * l..(r + 1) * l];
                    self.decode_row(
                        row.iter()
                            .zip(mrow)
                            .filter(|(_, &k)| k != 0)
                            .map(|(&id, _)| id),
                        skip_special_tokens,
                    )
                }
                None => self.decode_row(row.iter().copied(), skip_special_tokens),
            }
        })
    }
}

/// GPT-2's byte <-> printable character map (bytes that are printable map to themselves, the
/// others to U+0100 onwards, in byte order).
fn char_to_byte() -> std::collections::HashMap<char, u8> {
    let printable = |b: u8| matches!(b, 33..=126 | 161..=172 | 174..=255);
    let mut next = 256u32;
    let mut map = std::collections::HashMap::with_capacity(256);
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or('\u{0}');
            next += 1;
            c
        };
        map.insert(c, b);
    }
    map
}

/// The per-id byte table of a tokenizer whose decoder is ByteLevel alone, or `None` (then the
/// generic `tokenizers` decode is used). Every entry is checked against `tokenizers` itself.
fn byte_table(tok: &tokenizers::Tokenizer) -> Option<ByteTable> {
    if !matches!(
        tok.get_decoder(),
        Some(tokenizers::DecoderWrapper::ByteLevel(_))
    ) {
        return None;
    }
    let map = char_to_byte();
    let n = tok.get_vocab_size(true);
    let added = tok.get_added_vocabulary();
    let mut table = Vec::with_capacity(n);
    for id in 0..n as u32 {
        let Some(token) = tok.id_to_token(id) else {
            table.push(None);
            continue;
        };
        // ByteLevel: a token whose characters are all in the map becomes those bytes; any other
        // token (an added token with other characters) keeps its own UTF-8.
        let bytes: Vec<u8> = token
            .chars()
            .map(|c| map.get(&c).copied())
            .collect::<Option<Vec<u8>>>()
            .unwrap_or_else(|| token.as_bytes().to_vec());
        if let Ok(expected) = tok.decode(&[id], false) {
            if expected != String::from_utf8_lossy(&bytes) {
                return None;
            }
        }
        let special = added.is_special_token(&token);
        table.push(Some((bytes.into_boxed_slice(), special)));
    }
    Some(table)
}

/// transformers' `clean_up_tokenization`: the same ten replacements, in the same order.
pub fn clean_up_tokenization(s: &str) -> String {
    const PAIRS: [(&str, &str); 10] = [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ];
    let mut out = s.to_string();
    for (a, b) in PAIRS {
        if out.contains(a) {
            out = out.replace(a, b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORDLEVEL: &str = r#"{
      "version": "1.0", "truncation": null, "padding": null,
      "added_tokens": [{"id": 3, "content": "<pad>", "single_word": false, "lstrip": false,
                        "rstrip": false, "normalized": false, "special": true}],
      "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
      "decoder": null,
      "model": {"type": "WordLevel", "vocab": {"hello": 0, "world": 1, "[UNK]": 2, "<pad>": 3},
                "unk_token": "[UNK]"}
    }"#;

    #[test]
    fn decodes_rows_with_mask() {
        let d = TokenDecoder::from_json(WORDLEVEL, false).unwrap();
        let ids = Tensor::from_slice(&[0i64, 1, 3, 3, 1, -5, 99, 0]).reshape([2, 4]);
        let mask = Tensor::from_slice(&[1i64, 1, 0, 0, 1, 1, 1, 1]).reshape([2, 4]);
        let out = d.decode_tensor(&ids, Some(&mask), false).unwrap();
        assert_eq!(out, vec!["hello world", "world hello"]);
        let out = d.decode_tensor(&ids, None, true).unwrap();
        assert_eq!(out[0], "hello world");
        assert!(TokenDecoder::from_json("{", false).is_err());
        assert!(TokenDecoder::from_file("/nonexistent/tokenizer.json").is_err());
        let f = Tensor::from_slice(&[0.5f32]).reshape([1, 1]);
        assert!(d.decode_tensor(&f, None, false).is_err());
    }

    #[test]
    fn clean_up() {
        assert_eq!(clean_up_tokenization("a , b . I 'm"), "a, b. I'm");
    }
}
