//! The crate's one error type.
//!
//! Every fallible function in r1kit returns [`Result`]. Each variant carries the name of the
//! argument at fault and what was expected, so the Python layer can raise a precise exception
//! (`r1kit.ShapeError`, `r1kit.DtypeError`, ...) without re-deriving context.

use std::fmt;

/// Which argument was wrong and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Name of the argument as the user wrote it (`"keys"`, `"total_steps"`).
    pub arg: String,
    /// What r1kit accepts there.
    pub expected: String,
    /// What it was given.
    pub actual: String,
}

impl Mismatch {
    /// Builds a mismatch from anything string-like.
    pub fn new(
        arg: impl Into<String>,
        expected: impl Into<String>,
        actual: impl Into<String>,
    ) -> Self {
        Self {
            arg: arg.into(),
            expected: expected.into(),
            actual: actual.into(),
        }
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}`: expected {}, got {}",
            self.arg, self.expected, self.actual
        )
    }
}

/// All errors r1kit can report. Python maps each variant to a class of the same name.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value is out of its domain (negative step, probability above 1, unknown option).
    #[error("{0}")]
    Value(Mismatch),
    /// An argument has the wrong kind of object (not a tensor, mixed key types).
    #[error("{0}")]
    Type(Mismatch),
    /// A tensor has the wrong number of dimensions or sizes.
    #[error("{0}")]
    Shape(Mismatch),
    /// A tensor has the wrong element type.
    #[error("{0}")]
    Dtype(Mismatch),
    /// Tensors live on the wrong or on different devices.
    #[error("{0}")]
    Device(Mismatch),
    /// A token sequence is not well formed (parallel-thinking tags).
    #[error("{0}")]
    Structure(String),
    /// libtorch refused an operation; the message is libtorch's first line, without the C++ trace.
    #[error("libtorch error: {0}")]
    Torch(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A value outside its domain.
    pub fn value(
        arg: impl Into<String>,
        expected: impl Into<String>,
        actual: impl fmt::Display,
    ) -> Self {
        Error::Value(Mismatch::new(arg, expected, actual.to_string()))
    }
    /// An argument of the wrong type.
    pub fn type_(
        arg: impl Into<String>,
        expected: impl Into<String>,
        actual: impl fmt::Display,
    ) -> Self {
        Error::Type(Mismatch::new(arg, expected, actual.to_string()))
    }
    /// A tensor of the wrong shape.
    pub fn shape(
        arg: impl Into<String>,
        expected: impl Into<String>,
        actual: impl fmt::Display,
    ) -> Self {
        Error::Shape(Mismatch::new(arg, expected, actual.to_string()))
    }
    /// A tensor of the wrong dtype.
    pub fn dtype(
        arg: impl Into<String>,
        expected: impl Into<String>,
        actual: impl fmt::Display,
    ) -> Self {
        Error::Dtype(Mismatch::new(arg, expected, actual.to_string()))
    }
    /// A tensor on the wrong device.
    pub fn device(
        arg: impl Into<String>,
        expected: impl Into<String>,
        actual: impl fmt::Display,
    ) -> Self {
        Error::Device(Mismatch::new(arg, expected, actual.to_string()))
    }
}

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        // libtorch messages carry a C++ backtrace after the first line; users need the first line.
        let full = e.to_string();
        let first = full
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("unknown libtorch failure");
        Error::Torch(first.to_string())
    }
}
