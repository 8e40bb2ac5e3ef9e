//! Bindings for `crate::rewards` (`r1kit.rewards` wraps them).
//!
//! Responses come either as a list of str or as token ids (`[N, L]` tensor + optional attention
//! mask, or a list of id lists) with a `TokenDecoder`; decoding and scoring both run after the
//! GIL is released.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};
use pyo3::{ffi, Borrowed};
use tch::Tensor;

use super::args::{self, type_name};
use super::tensor::{is_tensor, tensor_arg, to_python};
use crate::error::{Error, Result};
use crate::rewards::format::{self, ParallelFormat, TagStrings, DEFAULT_TAGS};
use crate::rewards::recipe::{check_step, Recipe};
use crate::rewards::{self, math, qa, MathGolds, Metric, TokenDecoder};
use crate::structure::ParallelTags;

/// A `tokenizer.json` decoder (Rust `tokenizers`), shared by reference with the scoring calls.
#[pyclass(name = "TokenDecoder", module = "r1kit._core", frozen)]
pub struct PyTokenDecoder {
    inner: Arc<TokenDecoder>,
}

#[pymethods]
impl PyTokenDecoder {
    #[staticmethod]
    fn from_file(py: Python<'_>, path: &Bound<'_, PyAny>) -> PyResult<Self> {
        let path = match path.extract::<std::path::PathBuf>() {
            Ok(p) if !path.is_instance_of::<pyo3::types::PyBytes>() => p,
            _ => return Err(Error::type_("path", "a str or os.PathLike", type_name(path)).into()),
        };
        let inner = py.detach(move || TokenDecoder::from_file(path))?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    #[staticmethod]
    #[pyo3(signature = (json, clean_up_tokenization_spaces = false))]
    fn from_json(
        py: Python<'_>,
        json: &Bound<'_, PyAny>,
        clean_up_tokenization_spaces: bool,
    ) -> PyResult<Self> {
        let json = args::string(json, "json")?;
        let inner =
            py.detach(move || TokenDecoder::from_json(&json, clean_up_tokenization_spaces))?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// A transformers fast tokenizer (its `backend_tokenizer`) or a `tokenizers.Tokenizer`.
    #[staticmethod]
    fn from_hf(py: Python<'_>, tokenizer: &Bound<'_, PyAny>) -> PyResult<Self> {
        let backend = if let Ok(b) = tokenizer.getattr("backend_tokenizer") {
            b
        } else if tokenizer.hasattr("to_str")? {
            tokenizer.clone()
        } else {
            return Err(Error::type_(
                "tokenizer",
                "a transformers fast tokenizer (PreTrainedTokenizerFast) or a tokenizers.Tokenizer",
                type_name(tokenizer),
            )
            .into());
        };
        let json = backend
            .call_method0("to_str")
            .and_then(|s| s.extract::<String>())
            .map_err(|_| {
                Error::type_(
                    "tokenizer",
                    "a tokenizer whose backend serializes with to_str()",
                    type_name(tokenizer),
                )
            })?;
        let clean_up = tokenizer
            .getattr("clean_up_tokenization_spaces")
            .and_then(|v| v.is_truthy())
            .unwrap_or(false);
        let inner = py.detach(move || TokenDecoder::from_json(&json, clean_up))?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    #[pyo3(signature = (ids, attention_mask = None, skip_special_tokens = false))]
    fn decode(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        attention_mask: Option<&Bound<'_, PyAny>>,
        skip_special_tokens: bool,
    ) -> PyResult<Vec<String>> {
        let src = ids_source(ids, attention_mask, self.inner.clone(), skip_special_tokens)?;
        Ok(py.detach(move || src.decode())?)
    }

    fn token_to_id(&self, token: &Bound<'_, PyAny>) -> PyResult<Option<u32>> {
        Ok(self.inner.token_to_id(&args::string(token, "token")?))
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    fn __repr__(&self) -> String {
        format!("TokenDecoder(vocab_size={})", self.inner.vocab_size())
    }
}

/// Where the responses come from: Python str objects (read in place, not copied), or ids.
enum Source<'py> {
    Texts(Vec<Bound<'py, PyString>>),
    Ids(IdsSource),
}

/// Token ids and their decoder (owned, so it crosses into the GIL-free closure).
enum IdsSource {
    Tensor {
        ids: Tensor,
        mask: Option<Tensor>,
        decoder: Arc<TokenDecoder>,
        skip: bool,
    },
    Lists {
        rows: Vec<Vec<i64>>,
        decoder: Arc<TokenDecoder>,
        skip: bool,
    },
}

impl IdsSource {
    /// The same ids (tensors share storage; Tensor is Send but not Sync).
    fn share(&self) -> Self {
        match self {
            IdsSource::Tensor {
                ids,
                mask,
                decoder,
                skip,
            } => IdsSource::Tensor {
                ids: ids.shallow_clone(),
                mask: mask.as_ref().map(Tensor::shallow_clone),
                decoder: decoder.clone(),
                skip: *skip,
            },
            IdsSource::Lists {
                rows,
                decoder,
                skip,
            } => IdsSource::Lists {
                rows: rows.clone(),
                decoder: decoder.clone(),
                skip: *skip,
            },
        }
    }

    fn decode(&self) -> Result<Vec<String>> {
        match self {
            IdsSource::Tensor {
                ids,
                mask,
                decoder,
                skip,
            } => decoder.decode_tensor(ids, mask.as_ref(), *skip),
            IdsSource::Lists {
                rows,
                decoder,
                skip,
            } => decoder.decode_lists(rows, *skip),
        }
    }
}

/// The responses as the GIL-free closure sees them: borrowed UTF-8 of the str objects (which
/// `Source` keeps alive; str objects are immutable), or ids to decode there.
enum TextView<'a> {
    Texts(Vec<Cow<'a, str>>),
    Ids(IdsSource),
}

impl Source<'_> {
    /// Borrows the texts' UTF-8 (lone surrogates become U+FFFD in an owned copy).
    fn view(&self) -> TextView<'_> {
        match self {
            Source::Texts(items) => TextView::Texts(utf8_of(items)),
            Source::Ids(ids) => TextView::Ids(ids.share()),
        }
    }
}

impl<'a> TextView<'a> {
    /// The response texts (decoded here when ids were given; call without the GIL).
    fn into_texts(self) -> Result<Vec<Cow<'a, str>>> {
        match self {
            TextView::Texts(t) => Ok(t),
            TextView::Ids(ids) => Ok(ids.decode()?.into_iter().map(Cow::Owned).collect()),
        }
    }
}

/// A list or tuple argument read item by item without new references (a batch of 10,000 str
/// objects costs no reference-count traffic until the caller keeps one).
enum Seq<'a, 'py> {
    List(&'a Bound<'py, PyList>),
    Tuple(&'a Bound<'py, PyTuple>),
}

impl<'a, 'py> Seq<'a, 'py> {
    fn of(obj: &'a Bound<'py, PyAny>, arg: &str, what: &str) -> Result<Self> {
        if let Ok(l) = obj.cast::<PyList>() {
            Ok(Seq::List(l))
        } else if let Ok(t) = obj.cast::<PyTuple>() {
            Ok(Seq::Tuple(t))
        } else {
            Err(Error::type_(arg, what, type_name(obj)))
        }
    }

    fn len(&self) -> usize {
        match self {
            Seq::List(l) => l.len(),
            Seq::Tuple(t) => t.len(),
        }
    }

    /// Item `i < self.len()`, borrowed from the sequence. The caller must not run Python code
    /// (which could shrink a list) while it holds the item; it takes a reference to keep one.
    fn get(&self, i: usize) -> Borrowed<'a, 'py, PyAny> {
        debug_assert!(i < self.len());
        match self {
            // SAFETY: i is below the length, read under the GIL with no Python code run since
            // (the module does not declare itself free-threading safe, so a free-threaded
            // interpreter re-enables the GIL for it); PyList_GET_ITEM returns a valid borrowed
            // pointer then.
            Seq::List(l) => unsafe {
                Borrowed::from_ptr(
                    l.py(),
                    ffi::PyList_GET_ITEM(l.as_ptr(), i as ffi::Py_ssize_t),
                )
            },
            // SAFETY: i is below the length of a tuple, which cannot change.
            Seq::Tuple(t) => unsafe { t.get_borrowed_item_unchecked(i) },
        }
    }

    /// Starts loading item `i`'s object header (the next items' headers are cold in a batch
    /// of long strings: one cache miss each otherwise).
    fn prefetch(&self, i: usize) {
        if i < self.len() {
            let p = self.get(i).as_ptr();
            crate::simd::prefetch_line(p.cast::<u8>());
        }
    }
}

/// How many items ahead [`Seq::prefetch`] is called.
const PREFETCH_ITEMS: usize = 8;

/// A list or tuple argument's items.
fn items<'py>(obj: &Bound<'py, PyAny>, arg: &str, what: &str) -> Result<Vec<Bound<'py, PyAny>>> {
    if let Ok(l) = obj.cast::<PyList>() {
        Ok(l.iter().collect())
    } else if let Ok(t) = obj.cast::<PyTuple>() {
        Ok(t.iter().collect())
    } else {
        Err(Error::type_(arg, what, type_name(obj)))
    }
}

/// A str item; lone surrogates become U+FFFD (a strange response is not an error).
fn lossy_str(obj: &Bound<'_, PyAny>, arg: impl FnOnce() -> String) -> Result<String> {
    let s = obj
        .cast::<PyString>()
        .map_err(|_| Error::type_(arg(), "a str", type_name(obj)))?;
    Ok(s.to_string_lossy().into_owned())
}

/// The str objects of a list argument (type-checked, not copied; a new reference to each, so
/// that a list changed by another thread while the GIL is released cannot free them).
fn str_objects<'py>(obj: &Bound<'py, PyAny>, arg: &str) -> Result<Vec<Bound<'py, PyString>>> {
    let seq = Seq::of(obj, arg, "a list of str")?;
    let mut out = Vec::with_capacity(seq.len());
    for i in 0..seq.len() {
        seq.prefetch(i + PREFETCH_ITEMS);
        let item = seq.get(i);
        match item.cast::<PyString>() {
            Ok(s) => out.push(s.to_owned()),
            Err(_) => {
                let item = item.to_owned();
                return Err(Error::type_(
                    format!("{arg}[{i}]"),
                    "a str",
                    type_name(&item),
                ));
            }
        }
    }
    Ok(out)
}

fn str_list(obj: &Bound<'_, PyAny>, arg: &str) -> Result<Vec<String>> {
    items(obj, arg, "a list of str")?
        .iter()
        .enumerate()
        .map(|(i, item)| lossy_str(item, || format!("{arg}[{i}]")))
        .collect()
}

/// Golds: one str or one list of str per response.
fn golds_arg(obj: &Bound<'_, PyAny>) -> Result<Vec<Vec<String>>> {
    let what = "a list with one str (or list of str) per response";
    items(obj, "golds", what)?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            if item.is_instance_of::<PyString>() {
                Ok(vec![lossy_str(item, String::new)?])
            } else if item.is_instance_of::<PyList>() || item.is_instance_of::<PyTuple>() {
                str_list(item, &format!("golds[{i}]"))
            } else {
                Err(Error::type_(
                    format!("golds[{i}]"),
                    "a str or a list of str",
                    type_name(item),
                ))
            }
        })
        .collect()
}

/// Golds of a math call, read in place: the distinct str objects (a gold repeated across a group
/// is usually one object, found by identity before any hashing) and per response their indices.
struct MathGoldsArg<'py> {
    objects: Vec<Bound<'py, PyString>>,
    offsets: Vec<usize>,
    ids: Vec<u32>,
}

/// The UTF-8 of str objects, read in place (lone surrogates become U+FFFD in an owned copy).
fn utf8_of<'a>(objects: &'a [Bound<'_, PyString>]) -> Vec<Cow<'a, str>> {
    (0..objects.len())
        .map(|i| {
            if let Some(next) = objects.get(i + PREFETCH_ITEMS) {
                crate::simd::prefetch_line(next.as_ptr().cast::<u8>());
            }
            utf8(&objects[i])
        })
        .collect()
}

/// The UTF-8 of a str object: borrowed (CPython keeps it, and for ASCII it is the text itself),
/// or a U+FFFD copy for lone surrogates.
fn utf8<'a>(s: &'a Bound<'_, PyString>) -> Cow<'a, str> {
    let mut len: ffi::Py_ssize_t = 0;
    // SAFETY: `s` is a str object held for 'a; on success the buffer is its UTF-8 (valid,
    // immutable and owned by the object), `len` bytes long.
    unsafe {
        let p = ffi::PyUnicode_AsUTF8AndSize(s.as_ptr(), &mut len);
        if !p.is_null() {
            let bytes = std::slice::from_raw_parts(p.cast::<u8>(), len as usize);
            return Cow::Borrowed(std::str::from_utf8_unchecked(bytes));
        }
        // Lone surrogates: drop the UnicodeEncodeError, then the lossy copy.
        ffi::PyErr_Clear();
    }
    s.to_string_lossy()
}

/// Hashes an object address: the bits above the allocator's 16-byte alignment, multiplied and
/// folded so that both the low bits (the table index) and the high bits (its tags) vary.
#[derive(Default)]
struct AddressHasher(u64);

impl std::hash::Hasher for AddressHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_usize(&mut self, a: usize) {
        self.0 = ((a as u64) >> 4).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
}

fn math_golds_arg<'py>(obj: &Bound<'py, PyAny>) -> Result<MathGoldsArg<'py>> {
    let what = "a list with one str (or list of str) per response";
    let seq = Seq::of(obj, "golds", what)?;
    let mut objects: Vec<Bound<'py, PyString>> = Vec::new();
    let mut seen: HashMap<usize, u32, BuildHasherDefault<AddressHasher>> = HashMap::default();
    let mut offsets = Vec::with_capacity(seq.len() + 1);
    let mut ids = Vec::with_capacity(seq.len());
    offsets.push(0);
    let mut add = |s: &Bound<'py, PyString>, ids: &mut Vec<u32>| -> Result<()> {
        // Same object as the previous gold (a group's samples side by side): no lookup at all.
        let ptr = s.as_ptr() as usize;
        if let Some(&last) = ids.last() {
            if objects[last as usize].as_ptr() as usize == ptr {
                ids.push(last);
                return Ok(());
            }
        }
        let k = match seen.get(&ptr) {
            Some(&k) => k,
            None => {
                let k = u32::try_from(objects.len()).map_err(|_| {
                    Error::value("golds", "fewer than 2**32 gold answers", objects.len())
                })?;
                seen.insert(ptr, k);
                objects.push(s.clone());
                k
            }
        };
        ids.push(k);
        Ok(())
    };
    for i in 0..seq.len() {
        let item = seq.get(i);
        if let Ok(s) = item.cast::<PyString>() {
            add(&s, &mut ids)?;
        } else {
            let item = item.to_owned();
            if !(item.is_instance_of::<PyList>() || item.is_instance_of::<PyTuple>()) {
                return Err(Error::type_(
                    format!("golds[{i}]"),
                    "a str or a list of str",
                    type_name(&item),
                ));
            }
            let arg = format!("golds[{i}]");
            for (j, x) in items_of(&item, &arg)?.into_iter().enumerate() {
                let s = x.cast_into::<PyString>().map_err(|e| {
                    Error::type_(
                        format!("{arg}[{j}]"),
                        "a str",
                        type_name(e.into_inner().as_any()),
                    )
                })?;
                add(&s, &mut ids)?;
            }
        }
        offsets.push(ids.len());
    }
    Ok(MathGoldsArg {
        objects,
        offsets,
        ids,
    })
}

fn items_of<'py>(obj: &Bound<'py, PyAny>, arg: &str) -> Result<Vec<Bound<'py, PyAny>>> {
    items(obj, arg, "a list of str")
}

fn decoder_arg(obj: Option<&Bound<'_, PyAny>>) -> Result<Option<Arc<TokenDecoder>>> {
    match obj {
        None => Ok(None),
        Some(o) if o.is_none() => Ok(None),
        Some(o) => o
            .cast::<PyTokenDecoder>()
            .map(|d| Some(d.get().inner.clone()))
            .map_err(|_| Error::type_("decoder", "an r1kit TokenDecoder", type_name(o))),
    }
}

fn none<'a, 'py>(obj: Option<&'a Bound<'py, PyAny>>) -> Option<&'a Bound<'py, PyAny>> {
    obj.filter(|o| !o.is_none())
}

/// Token ids as a tensor (+ mask) or a list of id lists.
fn ids_rows(ids: &Bound<'_, PyAny>, mask: Option<&Bound<'_, PyAny>>) -> Result<IdRows> {
    if is_tensor(ids) {
        let t = tensor_arg(ids, "ids")?;
        let m = none(mask)
            .map(|m| tensor_arg(m, "attention_mask"))
            .transpose()?;
        return Ok(IdRows::Tensor(t, m));
    }
    if none(mask).is_some() {
        return Err(Error::type_(
            "attention_mask",
            "None when ids is a list of lists (drop the pads from the lists)",
            "a mask",
        ));
    }
    let rows = items(
        ids,
        "ids",
        "an integer tensor [N, L] or a list of lists of int",
    )?;
    let rows = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            items(row, &format!("ids[{i}]"), "a list of int")?
                .iter()
                .enumerate()
                .map(|(j, v)| args::int(v, &format!("ids[{i}][{j}]")))
                .collect::<Result<Vec<i64>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(IdRows::Lists(rows))
}

enum IdRows {
    Tensor(Tensor, Option<Tensor>),
    Lists(Vec<Vec<i64>>),
}

fn ids_source(
    ids: &Bound<'_, PyAny>,
    mask: Option<&Bound<'_, PyAny>>,
    decoder: Arc<TokenDecoder>,
    skip: bool,
) -> Result<IdsSource> {
    Ok(match ids_rows(ids, mask)? {
        IdRows::Tensor(ids, mask) => IdsSource::Tensor {
            ids,
            mask,
            decoder,
            skip,
        },
        IdRows::Lists(rows) => IdsSource::Lists {
            rows,
            decoder,
            skip,
        },
    })
}

/// `responses=` or `ids=` + `decoder=` (exactly one of the two forms).
fn source<'py>(
    responses: Option<&Bound<'py, PyAny>>,
    ids: Option<&Bound<'py, PyAny>>,
    mask: Option<&Bound<'py, PyAny>>,
    decoder: Option<&Bound<'py, PyAny>>,
    skip: bool,
) -> Result<Source<'py>> {
    match (none(responses), none(ids)) {
        (Some(r), None) => {
            if none(mask).is_some() {
                return Err(Error::type_(
                    "attention_mask",
                    "None with text responses (it goes with ids=)",
                    "a mask",
                ));
            }
            Ok(Source::Texts(str_objects(r, "responses")?))
        }
        (None, Some(ids)) => {
            let decoder = decoder_arg(decoder)?.ok_or_else(|| {
                Error::type_("decoder", "a TokenDecoder when ids= is given", "None")
            })?;
            ids_source(ids, mask, decoder, skip).map(Source::Ids)
        }
        (Some(_), Some(_)) => Err(Error::type_(
            "ids",
            "None when responses are given (pass text or ids, not both)",
            "ids",
        )),
        (None, None) => Err(Error::type_(
            "responses",
            "a list of str (or ids= with decoder=)",
            "None",
        )),
    }
}

fn tensor_f32<'py>(py: Python<'py>, values: &[f64]) -> PyResult<Bound<'py, PyAny>> {
    let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    to_python(py, Tensor::f_from_slice(&v).map_err(Error::from)?)
}

fn finite(obj: &Bound<'_, PyAny>, arg: &str) -> Result<f64> {
    let v = args::float(obj, arg)?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Error::value(arg, "a finite number", v))
    }
}

#[pyfunction]
#[pyo3(signature = (responses, ids = None, attention_mask = None, decoder = None))]
pub fn extract_answer(
    py: Python<'_>,
    responses: Option<&Bound<'_, PyAny>>,
    ids: Option<&Bound<'_, PyAny>>,
    attention_mask: Option<&Bound<'_, PyAny>>,
    decoder: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<Option<String>>> {
    let owner = source(responses, ids, attention_mask, decoder, false)?;
    let view = owner.view();
    Ok(py.detach(move || rewards::extract_answers(&view.into_texts()?))?)
}

#[pyfunction]
#[pyo3(signature = (s, unicode = false))]
pub fn normalize_answer(s: &Bound<'_, PyAny>, unicode: bool) -> PyResult<String> {
    let s = lossy_str(s, || "s".to_string())?;
    Ok(qa::normalize_answer(&s, unicode))
}

/// Scores, extracted answers.
#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (responses, golds, metric, unicode, ids = None, attention_mask = None, decoder = None))]
pub fn qa_scores<'py>(
    py: Python<'py>,
    responses: Option<&Bound<'py, PyAny>>,
    golds: &Bound<'py, PyAny>,
    metric: &Bound<'py, PyAny>,
    unicode: bool,
    ids: Option<&Bound<'py, PyAny>>,
    attention_mask: Option<&Bound<'py, PyAny>>,
    decoder: Option<&Bound<'py, PyAny>>,
) -> PyResult<(Bound<'py, PyAny>, Vec<Option<String>>)> {
    let metric = Metric::parse(&args::string(metric, "metric")?)?;
    let owner = source(responses, ids, attention_mask, decoder, false)?;
    let view = owner.view();
    let golds = golds_arg(golds)?;
    let scored =
        py.detach(move || rewards::qa_scores(&view.into_texts()?, &golds, metric, unicode))?;
    let scores: Vec<f64> = scored.iter().map(|s| s.score).collect();
    let answers = scored.into_iter().map(|s| s.answer).collect();
    Ok((tensor_f32(py, &scores)?, answers))
}

#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (responses, golds, metric, unicode, structure_score, final_format_score, ids = None, attention_mask = None, decoder = None))]
pub fn qa_format_scores<'py>(
    py: Python<'py>,
    responses: Option<&Bound<'py, PyAny>>,
    golds: &Bound<'py, PyAny>,
    metric: &Bound<'py, PyAny>,
    unicode: bool,
    structure_score: &Bound<'py, PyAny>,
    final_format_score: &Bound<'py, PyAny>,
    ids: Option<&Bound<'py, PyAny>>,
    attention_mask: Option<&Bound<'py, PyAny>>,
    decoder: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let metric = Metric::parse(&args::string(metric, "metric")?)?;
    let s = finite(structure_score, "structure_score")?;
    let f = finite(final_format_score, "final_format_score")?;
    let owner = source(responses, ids, attention_mask, decoder, false)?;
    let view = owner.view();
    let golds = golds_arg(golds)?;
    let scores = py.detach(move || {
        rewards::qa_format_scores(&view.into_texts()?, &golds, metric, unicode, s, f)
    })?;
    tensor_f32(py, &scores)
}

#[pyfunction]
#[pyo3(signature = (responses, ids = None, attention_mask = None, decoder = None))]
pub fn extract_math_answer(
    py: Python<'_>,
    responses: Option<&Bound<'_, PyAny>>,
    ids: Option<&Bound<'_, PyAny>>,
    attention_mask: Option<&Bound<'_, PyAny>>,
    decoder: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<Option<String>>> {
    let owner = source(responses, ids, attention_mask, decoder, false)?;
    let view = owner.view();
    Ok(py.detach(move || {
        let texts = view.into_texts()?;
        rewards::par_map(texts.len(), |i| math::extract_math_answer(&texts[i]))
    })?)
}

#[pyfunction]
#[pyo3(signature = (pred, gold, percent = false))]
pub fn math_equal(
    pred: &Bound<'_, PyAny>,
    gold: &Bound<'_, PyAny>,
    percent: bool,
) -> PyResult<bool> {
    let p = lossy_str(pred, || "pred".to_string())?;
    let g = lossy_str(gold, || "gold".to_string())?;
    Ok(math::math_equal(&p, &g, percent))
}

#[pyfunction]
pub fn normalize_math_answer(s: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(math::normalize_math(&lossy_str(s, || "s".to_string())?).canon)
}

/// Per response: 1 correct, 0 wrong, -1 no answer; and the extracted answers.
#[pyfunction]
#[pyo3(signature = (responses, golds, percent, ids = None, attention_mask = None, decoder = None))]
pub fn math_judge(
    py: Python<'_>,
    responses: Option<&Bound<'_, PyAny>>,
    golds: &Bound<'_, PyAny>,
    percent: bool,
    ids: Option<&Bound<'_, PyAny>>,
    attention_mask: Option<&Bound<'_, PyAny>>,
    decoder: Option<&Bound<'_, PyAny>>,
) -> PyResult<(Vec<i8>, Vec<Option<String>>)> {
    let owner = source(responses, ids, attention_mask, decoder, false)?;
    let view = owner.view();
    let golds = math_golds_arg(golds)?;
    let strings = utf8_of(&golds.objects);
    let (offsets, gold_ids) = (golds.offsets, golds.ids);
    Ok(py.detach(move || -> Result<_> {
        let table = MathGolds::from_parts(&strings, offsets, gold_ids)?;
        let texts = view.into_texts()?;
        let verdicts = rewards::math_judge_golds(&texts, &table, percent)?;
        let answers = rewards::par_map(texts.len(), |i| math::extract_math_answer(&texts[i]))?;
        let codes = verdicts
            .into_iter()
            .map(|v| match v {
                Some(true) => 1,
                Some(false) => 0,
                None => -1,
            })
            .collect();
        Ok((codes, answers))
    })?)
}

#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (responses, golds, correct, incorrect, percent, ids = None, attention_mask = None, decoder = None))]
pub fn math_scores<'py>(
    py: Python<'py>,
    responses: Option<&Bound<'py, PyAny>>,
    golds: &Bound<'py, PyAny>,
    correct: &Bound<'py, PyAny>,
    incorrect: &Bound<'py, PyAny>,
    percent: bool,
    ids: Option<&Bound<'py, PyAny>>,
    attention_mask: Option<&Bound<'py, PyAny>>,
    decoder: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let (c, w) = (finite(correct, "correct")?, finite(incorrect, "incorrect")?);
    let owner = source(responses, ids, attention_mask, decoder, false)?;
    let view = owner.view();
    let golds = math_golds_arg(golds)?;
    let strings = utf8_of(&golds.objects);
    let (offsets, gold_ids) = (golds.offsets, golds.ids);
    let scores = py.detach(move || {
        let table = MathGolds::from_parts(&strings, offsets, gold_ids)?;
        rewards::math_scores_golds(&view.into_texts()?, &table, percent, c, w)
    })?;
    tensor_f32(py, &scores)
}

/// The tags of a format check: strings for text, ids for token ids.
enum Tags {
    Text(TagStrings),
    Ids(ParallelTags),
}

fn tags_arg(
    tags: Option<&Bound<'_, PyAny>>,
    ids_given: bool,
    decoder: Option<&Arc<TokenDecoder>>,
) -> Result<Tags> {
    let Some(tags) = none(tags) else {
        if !ids_given {
            return Ok(Tags::Text(TagStrings::default()));
        }
        let Some(d) = decoder else {
            return Err(Error::type_(
                "tags",
                "six tag token ids (or decoder= to look the default tags up)",
                "None",
            ));
        };
        let mut found = [0i64; 6];
        for (k, t) in DEFAULT_TAGS.iter().enumerate() {
            found[k] = i64::from(d.token_to_id(t).ok_or_else(|| {
                Error::value(
                    "tags",
                    format!("a tokenizer where {t} is one token"),
                    format!("a vocabulary without {t}"),
                )
            })?);
        }
        let [a, b, c, dd, e, f] = found;
        return ParallelTags::new(a, b, c, dd, e, f).map(Tags::Ids);
    };
    let list = items(tags, "tags", "a list of six tag strings or six token ids")?;
    if list.len() != 6 {
        return Err(Error::value(
            "tags",
            "six tags: <Parallel> </Parallel> <Path> </Path> <Summary> </Summary>",
            format!("{} items", list.len()),
        ));
    }
    if ids_given {
        let v = list
            .iter()
            .enumerate()
            .map(|(k, t)| args::int(t, &format!("tags[{k}]")))
            .collect::<Result<Vec<i64>>>()?;
        ParallelTags::new(v[0], v[1], v[2], v[3], v[4], v[5]).map(Tags::Ids)
    } else {
        let v = list
            .iter()
            .enumerate()
            .map(|(k, t)| args::string(t, &format!("tags[{k}]")))
            .collect::<Result<Vec<String>>>()?;
        let arr: [String; 6] = v
            .try_into()
            .map_err(|_| Error::value("tags", "six tags", "?"))?;
        TagStrings::new(arr).map(Tags::Text)
    }
}

/// What the format check reads: texts with tag strings, or id rows with tag ids.
enum FormatInput {
    Texts(Vec<String>, TagStrings),
    Rows(Vec<Vec<i64>>, ParallelTags),
    TensorRows(Tensor, Option<Tensor>, ParallelTags),
}

impl FormatInput {
    fn new(
        responses: Option<&Bound<'_, PyAny>>,
        ids: Option<&Bound<'_, PyAny>>,
        mask: Option<&Bound<'_, PyAny>>,
        tags: Option<&Bound<'_, PyAny>>,
        decoder: Option<&Arc<TokenDecoder>>,
    ) -> Result<Self> {
        match (none(responses), none(ids)) {
            (Some(r), None) => {
                let Tags::Text(t) = tags_arg(tags, false, decoder)? else {
                    unreachable!("text tags for text input")
                };
                if none(mask).is_some() {
                    return Err(Error::type_(
                        "attention_mask",
                        "None with text responses (it goes with ids=)",
                        "a mask",
                    ));
                }
                Ok(FormatInput::Texts(str_list(r, "responses")?, t))
            }
            (None, Some(ids)) => {
                let Tags::Ids(t) = tags_arg(tags, true, decoder)? else {
                    unreachable!("id tags for ids input")
                };
                Ok(match ids_rows(ids, mask)? {
                    IdRows::Tensor(i, m) => FormatInput::TensorRows(i, m, t),
                    IdRows::Lists(rows) => FormatInput::Rows(rows, t),
                })
            }
            (Some(_), Some(_)) => Err(Error::type_(
                "ids",
                "None when responses are given (pass text or ids, not both)",
                "ids",
            )),
            (None, None) => Err(Error::type_("responses", "a list of str (or ids=)", "None")),
        }
    }

    fn formats(&self) -> Result<Vec<ParallelFormat>> {
        match self {
            FormatInput::Texts(texts, tags) => format::texts_format(texts, tags),
            FormatInput::Rows(rows, tags) => format::rows_format(rows, tags),
            FormatInput::TensorRows(ids, mask, tags) => {
                format::rows_format(&format::tensor_rows(ids, mask.as_ref())?, tags)
            }
        }
    }
}

type FormatLists = (
    Vec<bool>,
    Vec<bool>,
    Vec<usize>,
    Vec<Vec<usize>>,
    Vec<String>,
);

fn format_lists(f: Vec<ParallelFormat>) -> FormatLists {
    let mut out: FormatLists = Default::default();
    for x in f {
        out.0.push(x.valid);
        out.1.push(x.uses_parallel);
        out.2.push(x.n_blocks);
        out.3.push(x.paths);
        out.4.push(x.status.to_string());
    }
    out
}

/// valid, uses_parallel, n_blocks, paths per block, status; per response.
#[pyfunction]
#[pyo3(signature = (responses = None, ids = None, attention_mask = None, tags = None, decoder = None))]
pub fn parallel_format(
    py: Python<'_>,
    responses: Option<&Bound<'_, PyAny>>,
    ids: Option<&Bound<'_, PyAny>>,
    attention_mask: Option<&Bound<'_, PyAny>>,
    tags: Option<&Bound<'_, PyAny>>,
    decoder: Option<&Bound<'_, PyAny>>,
) -> PyResult<FormatLists> {
    let dec = decoder_arg(decoder)?;
    let input = FormatInput::new(responses, ids, attention_mask, tags, dec.as_ref())?;
    Ok(format_lists(py.detach(move || input.formats())?))
}

/// Checks a recipe's parameters (the wrapper's constructor calls this once).
#[pyfunction]
pub fn parallel_r1_recipe(
    recipe: &Bound<'_, PyAny>,
    window: &Bound<'_, PyAny>,
    acc_steps: &Bound<'_, PyAny>,
    bonus: &Bound<'_, PyAny>,
) -> PyResult<()> {
    recipe_arg(recipe, window, acc_steps, bonus)?;
    Ok(())
}

fn recipe_arg(
    recipe: &Bound<'_, PyAny>,
    window: &Bound<'_, PyAny>,
    acc_steps: &Bound<'_, PyAny>,
    bonus: &Bound<'_, PyAny>,
) -> Result<Recipe> {
    Recipe::new(
        &args::string(recipe, "recipe")?,
        args::int(window, "window")?,
        args::int(acc_steps, "acc_steps")?,
        args::float(bonus, "bonus")?,
    )
}

#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (recipe, window, acc_steps, bonus, responses, golds, step, ids = None, attention_mask = None, decoder = None, tags = None))]
pub fn parallel_r1_rewards<'py>(
    py: Python<'py>,
    recipe: &Bound<'py, PyAny>,
    window: &Bound<'py, PyAny>,
    acc_steps: &Bound<'py, PyAny>,
    bonus: &Bound<'py, PyAny>,
    responses: Option<&Bound<'py, PyAny>>,
    golds: &Bound<'py, PyAny>,
    step: &Bound<'py, PyAny>,
    ids: Option<&Bound<'py, PyAny>>,
    attention_mask: Option<&Bound<'py, PyAny>>,
    decoder: Option<&Bound<'py, PyAny>>,
    tags: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let recipe = recipe_arg(recipe, window, acc_steps, bonus)?;
    let step = check_step(args::int(step, "step")?)?;
    let dec = decoder_arg(decoder)?;
    let golds = golds_arg(golds)?;
    let fmt_input = FormatInput::new(responses, ids, attention_mask, tags, dec.as_ref())?;
    let text_owner = source(responses, ids, attention_mask, decoder, false)?;
    let text_view = text_owner.view();
    let rewards = py.detach(move || -> Result<Vec<f64>> {
        let texts = text_view.into_texts()?;
        let formats = if recipe.needs_format(step) {
            fmt_input.formats()?
        } else {
            Vec::new()
        };
        rewards::recipe_rewards(recipe, step, &texts, &golds, |i| formats[i].clone())
    })?;
    tensor_f32(py, &rewards)
}

/// Registers the rewards functions and classes on `r1kit._core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTokenDecoder>()?;
    m.add_function(wrap_pyfunction!(extract_answer, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_answer, m)?)?;
    m.add_function(wrap_pyfunction!(qa_scores, m)?)?;
    m.add_function(wrap_pyfunction!(qa_format_scores, m)?)?;
    m.add_function(wrap_pyfunction!(extract_math_answer, m)?)?;
    m.add_function(wrap_pyfunction!(math_equal, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_math_answer, m)?)?;
    m.add_function(wrap_pyfunction!(math_judge, m)?)?;
    m.add_function(wrap_pyfunction!(math_scores, m)?)?;
    m.add_function(wrap_pyfunction!(parallel_format, m)?)?;
    m.add_function(wrap_pyfunction!(parallel_r1_recipe, m)?)?;
    m.add_function(wrap_pyfunction!(parallel_r1_rewards, m)?)?;
    Ok(())
}
