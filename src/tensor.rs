//! Tensor plumbing shared by every area: validation, raw CPU views and path selection.
//!
//! Each hot function has two implementations with identical results:
//! - the **CPU path** reads and writes the tensor's memory directly (rayon over rows);
//! - the **device path** uses tch ops only, so it runs wherever libtorch runs (CUDA included).
//!
//! CPU tensors take the CPU path unless the caller asks for [`TensorPath::Device`] or the
//! environment sets `R1KIT_FORCE_TENSOR_PATH=1`; this is how the device path is tested on machines
//! without a GPU.

use tch::{kind::Element, Device, Kind, Tensor};

use crate::error::{Error, Result};

/// Environment variable that forces the device (tch ops) path for CPU tensors when set to `1`.
pub const FORCE_TENSOR_PATH_ENV: &str = "R1KIT_FORCE_TENSOR_PATH";

/// Which implementation a call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TensorPath {
    /// CPU path for CPU tensors, device path otherwise (overridden by `R1KIT_FORCE_TENSOR_PATH=1`).
    #[default]
    Auto,
    /// Raw-memory CPU path; needs CPU tensors.
    Cpu,
    /// tch ops on the tensor's own device.
    Device,
}

impl TensorPath {
    /// Parses the user-facing names `"auto"`, `"cpu"` and `"device"`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "auto" => Ok(TensorPath::Auto),
            "cpu" => Ok(TensorPath::Cpu),
            "device" => Ok(TensorPath::Device),
            other => Err(Error::value(
                "path",
                "one of 'auto', 'cpu', 'device'",
                format!("{other:?}"),
            )),
        }
    }

    /// Resolves `Auto` for data on `device`; refuses the CPU path for non-CPU data.
    pub fn resolve(self, device: Device) -> Result<Self> {
        match self {
            TensorPath::Auto if device != Device::Cpu || forced_device_path() => {
                Ok(TensorPath::Device)
            }
            TensorPath::Auto => Ok(TensorPath::Cpu),
            TensorPath::Cpu if device != Device::Cpu => Err(Error::device(
                "path",
                "CPU tensors for path='cpu'",
                format!("a tensor on {}", device_name(device)),
            )),
            explicit => Ok(explicit),
        }
    }
}

/// True when `R1KIT_FORCE_TENSOR_PATH=1` (read on every call, so tests can toggle it).
pub fn forced_device_path() -> bool {
    std::env::var(FORCE_TENSOR_PATH_ENV).is_ok_and(|v| v.trim() == "1")
}

/// Human name of a device, as torch prints it (`cpu`, `cuda:0`).
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".to_string(),
        Device::Vulkan => "vulkan".to_string(),
    }
}

/// Human name of a dtype, as torch prints it (`torch.int64`).
pub fn kind_name(kind: Kind) -> String {
    let name = match kind {
        Kind::Uint8 => "uint8",
        Kind::Int8 => "int8",
        Kind::Int16 => "int16",
        Kind::Int => "int32",
        Kind::Int64 => "int64",
        Kind::Half => "float16",
        Kind::Float => "float32",
        Kind::Double => "float64",
        Kind::ComplexHalf => "complex32",
        Kind::ComplexFloat => "complex64",
        Kind::ComplexDouble => "complex128",
        Kind::Bool => "bool",
        Kind::BFloat16 => "bfloat16",
        other => return format!("torch.{other:?}").to_lowercase(),
    };
    format!("torch.{name}")
}

/// The tensor's dtype, or a dtype error for dtypes tch does not model.
pub fn kind_of(t: &Tensor, arg: &str) -> Result<Kind> {
    t.f_kind().map_err(|_| {
        Error::dtype(
            arg,
            "a standard torch dtype",
            "a dtype tch does not support",
        )
    })
}

/// True for the integer dtypes (bool excluded).
pub fn is_integer(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Uint8 | Kind::Int8 | Kind::Int16 | Kind::Int | Kind::Int64
    )
}

/// Shape as torch prints it: `[2, 3]`.
pub fn shape_name(t: &Tensor) -> String {
    format!("{:?}", t.size())
}

/// Checks that `t` has `ndim` dimensions.
pub fn expect_ndim(t: &Tensor, arg: &str, ndim: usize) -> Result<()> {
    if t.dim() == ndim {
        Ok(())
    } else {
        Err(Error::shape(
            arg,
            format!("a {ndim}-D tensor"),
            format!("shape {}", shape_name(t)),
        ))
    }
}

/// Checks that `t` holds integers and returns it as int64 (no copy when it already is).
pub fn integer_as_i64(t: &Tensor, arg: &str) -> Result<Tensor> {
    let kind = kind_of(t, arg)?;
    if !is_integer(kind) {
        return Err(Error::dtype(arg, "an integer tensor", kind_name(kind)));
    }
    if kind == Kind::Int64 {
        Ok(t.shallow_clone())
    } else {
        Ok(t.f_to_kind(Kind::Int64)?)
    }
}

/// Checks that `other` lives on `device` (the device of the call's main tensor).
pub fn expect_device(other: &Tensor, arg: &str, device: Device) -> Result<()> {
    if other.device() == device {
        Ok(())
    } else {
        Err(Error::device(
            arg,
            format!("a tensor on {} like the other inputs", device_name(device)),
            format!("a tensor on {}", device_name(other.device())),
        ))
    }
}

/// Contiguous version of `t` (no copy when it already is).
pub fn contiguous(t: &Tensor) -> Tensor {
    if t.is_contiguous() {
        t.shallow_clone()
    } else {
        t.contiguous()
    }
}

fn check_cpu_view<T: Element>(t: &Tensor, arg: &str) -> Result<()> {
    if t.device() != Device::Cpu {
        return Err(Error::device(
            arg,
            "a CPU tensor",
            format!("a tensor on {}", device_name(t.device())),
        ));
    }
    let kind = kind_of(t, arg)?;
    if kind != T::KIND {
        return Err(Error::dtype(arg, kind_name(T::KIND), kind_name(kind)));
    }
    if !t.is_contiguous() {
        return Err(Error::shape(
            arg,
            "a contiguous tensor",
            "a strided view (call .contiguous())",
        ));
    }
    Ok(())
}

/// The tensor's data address, or an error for tensors without storage (fake, meta, ...).
///
/// tch's `data_ptr` panics when libtorch refuses; this goes to the C API and reports instead.
pub fn data_ptr(t: &Tensor, arg: &str) -> Result<*mut std::ffi::c_void> {
    // SAFETY: `t` is a live tensor handle; the error string, if any, is ours to free.
    unsafe {
        let ptr = torch_sys::at_data_ptr(t.as_ptr() as *mut torch_sys::C_tensor);
        let err = torch_sys::get_and_reset_last_err();
        if err.is_null() {
            return Ok(ptr);
        }
        let msg = std::ffi::CStr::from_ptr(err).to_string_lossy().into_owned();
        libc::free(err as *mut libc::c_void);
        let first = msg.lines().next().unwrap_or("").trim().to_string();
        Err(Error::value(
            arg,
            "a tensor with readable storage",
            format!("one libtorch cannot read ({first})"),
        ))
    }
}

/// Borrows a contiguous CPU tensor's memory as a slice.
///
/// Fails (never panics) on a wrong device, dtype or layout.
pub fn cpu_slice<'a, T: Element>(t: &'a Tensor, arg: &str) -> Result<&'a [T]> {
    check_cpu_view::<T>(t, arg)?;
    let n = t.numel();
    if n == 0 {
        return Ok(&[]);
    }
    let ptr = data_ptr(t, arg)? as *const T;
    // SAFETY: the tensor is a contiguous CPU tensor of element type T with n elements; the slice
    // borrows `t`, which keeps the storage alive.
    Ok(unsafe { std::slice::from_raw_parts(ptr, n) })
}

/// Borrows a contiguous CPU tensor's memory mutably.
///
/// Only for tensors r1kit has just allocated: a caller's tensor may share storage with views.
pub fn cpu_slice_mut<'a, T: Element>(t: &'a mut Tensor, arg: &str) -> Result<&'a mut [T]> {
    check_cpu_view::<T>(t, arg)?;
    let n = t.numel();
    if n == 0 {
        return Ok(&mut []);
    }
    let ptr = data_ptr(t, arg)? as *mut T;
    // SAFETY: as in `cpu_slice`; `&mut Tensor` plus the "freshly allocated" contract give exclusivity.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, n) })
}

/// A new tensor with its own storage holding a copy of `t` (same dtype, device, shape).
pub fn fresh_copy(t: &Tensor) -> Result<Tensor> {
    let mut out = t.f_empty_like()?;
    out.f_copy_(t)?;
    Ok(out)
}

/// A new, uninitialised CPU tensor of `n` elements of type `T`.
pub fn empty_cpu<T: Element>(shape: &[i64]) -> Result<Tensor> {
    Ok(Tensor::f_empty(shape, (T::KIND, Device::Cpu))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_read_and_write_tensor_memory() {
        let mut t = empty_cpu::<i64>(&[4]).unwrap();
        cpu_slice_mut::<i64>(&mut t, "t")
            .unwrap()
            .copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(cpu_slice::<i64>(&t, "t").unwrap(), &[1, 2, 3, 4]);
        assert_eq!(t.sum(Kind::Int64).int64_value(&[]), 10);
    }

    #[test]
    fn wrong_views_are_errors() {
        let t = Tensor::from_slice(&[1.0f32, 2.0]);
        assert!(matches!(cpu_slice::<i64>(&t, "x"), Err(Error::Dtype(_))));
        let m = Tensor::from_slice(&[1i64, 2, 3, 4])
            .reshape([2, 2])
            .transpose(0, 1);
        assert!(matches!(cpu_slice::<i64>(&m, "x"), Err(Error::Shape(_))));
        assert!(matches!(expect_ndim(&m, "x", 1), Err(Error::Shape(_))));
        assert!(matches!(integer_as_i64(&t, "x"), Err(Error::Dtype(_))));
    }

    #[test]
    fn path_resolution() {
        assert_eq!(
            TensorPath::Device.resolve(Device::Cpu).unwrap(),
            TensorPath::Device
        );
        assert!(TensorPath::Cpu.resolve(Device::Cuda(0)).is_err());
        assert_eq!(
            TensorPath::Auto.resolve(Device::Cuda(0)).unwrap(),
            TensorPath::Device
        );
        assert!(TensorPath::parse("gpu").is_err());
    }
}
