//! Small conversions between host `f32` buffers and ORT values of the graph's float type, and
//! the KV cache reshuffles of continuous batching.

use super::error::{ort_err, Error};
use half::f16;
use ort::memory::AllocationDevice;
use ort::value::{DynTensorValueType, DynValue, Tensor, TensorElementType};

/// A float tensor of element type `ty` (f32 or f16) from f32 data.
pub fn float_tensor(
    ty: TensorElementType,
    shape: Vec<usize>,
    data: Vec<f32>,
) -> Result<DynValue, Error> {
    let shape: Vec<i64> = shape.into_iter().map(|d| d as i64).collect();
    match ty {
        TensorElementType::Float16 => {
            let d: Vec<f16> = data.into_iter().map(f16::from_f32).collect();
            Ok(Tensor::from_array((shape, d))
                .map_err(ort_err("f16 tensor"))?
                .into_dyn())
        }
        _ => Ok(Tensor::from_array((shape, data))
            .map_err(ort_err("f32 tensor"))?
            .into_dyn()),
    }
}

pub fn i64_tensor(shape: Vec<usize>, data: Vec<i64>) -> Result<DynValue, Error> {
    let shape: Vec<i64> = shape.into_iter().map(|d| d as i64).collect();
    Ok(Tensor::from_array((shape, data))
        .map_err(ort_err("i64 tensor"))?
        .into_dyn())
}

/// Shape and data of a float output as f32.
pub fn to_f32(v: &DynValue, what: &str) -> Result<(Vec<usize>, Vec<f32>), Error> {
    if let Ok((shape, d)) = v.try_extract_tensor::<f32>() {
        return Ok((shape.iter().map(|&x| x as usize).collect(), d.to_vec()));
    }
    let (shape, d) = v.try_extract_tensor::<f16>().map_err(ort_err(format!(
        "{what}: expected a float32 or float16 tensor"
    )))?;
    Ok((
        shape.iter().map(|&x| x as usize).collect(),
        d.iter().map(|x| x.to_f32()).collect(),
    ))
}

/// A host copy of `v` when it lives in device memory (a device-resident KV cache), else `None`.
fn host_copy(v: &DynValue) -> Result<Option<DynValue>, Error> {
    let t = v
        .view()
        .downcast::<DynTensorValueType>()
        .map_err(ort_err("kv cache"))?;
    if t.memory_info().is_cpu_accessible() {
        return Ok(None);
    }
    let host = t
        .to(AllocationDevice::CPU, 0)
        .map_err(ort_err("kv cache: copy to host"))?;
    Ok(Some(host.into_dyn()))
}

/// `out` (host memory) moved to the memory `like` is in, when that is a device's.
fn to_memory_of(like: &DynValue, out: DynValue) -> Result<DynValue, Error> {
    let t = like
        .view()
        .downcast::<DynTensorValueType>()
        .map_err(ort_err("kv cache"))?;
    let mem = t.memory_info();
    if mem.is_cpu_accessible() {
        return Ok(out);
    }
    let out = out
        .downcast::<DynTensorValueType>()
        .map_err(ort_err("kv cache"))?;
    Ok(out
        .to(mem.allocation_device(), mem.device_id())
        .map_err(ort_err("kv cache: copy to the device"))?
        .into_dyn())
}

/// Rows `rows` of axis 0 and, on axis 2, positions `from..` of a rank-4 KV tensor, in the
/// tensor's own element type and memory. A device-resident tensor goes through the host: one
/// copy down, one up (a join or leave, not a step).
pub fn select_kv(v: &DynValue, rows: &[usize], from: usize) -> Result<DynValue, Error> {
    let host = host_copy(v)?;
    let out = select_kv_host(host.as_ref().unwrap_or(v), rows, from)?;
    to_memory_of(v, out)
}

fn select_kv_host(v: &DynValue, rows: &[usize], from: usize) -> Result<DynValue, Error> {
    fn pick<T: Copy>(shape: &[i64], d: &[T], rows: &[usize], from: usize) -> (Vec<i64>, Vec<T>) {
        let (h, t, e) = (shape[1] as usize, shape[2] as usize, shape[3] as usize);
        let mut out = Vec::with_capacity(rows.len() * h * (t - from) * e);
        for &r in rows {
            for hh in 0..h {
                let base = ((r * h + hh) * t + from) * e;
                out.extend_from_slice(&d[base..base + (t - from) * e]);
            }
        }
        (
            vec![rows.len() as i64, h as i64, (t - from) as i64, e as i64],
            out,
        )
    }
    if let Ok((shape, d)) = v.try_extract_tensor::<f32>() {
        let (s, o) = pick(shape, d, rows, from);
        return Ok(Tensor::from_array((s, o))
            .map_err(ort_err("kv slice"))?
            .into_dyn());
    }
    let (shape, d) = v.try_extract_tensor::<f16>().map_err(ort_err("kv slice"))?;
    let (s, o) = pick(shape, d, rows, from);
    Ok(Tensor::from_array((s, o))
        .map_err(ort_err("kv slice"))?
        .into_dyn())
}

/// Rank-4 KV tensors `[B_i, h, T_i, d]` stacked on axis 0, each left-padded with zeros on
/// axis 2 by its own amount (`parts[i].1`) so that all reach one length: how a running batch's
/// cache and a newly prefilled one become one batch. Zero columns are masked out by the caller.
/// The result is in the first part's memory; device-resident parts go through the host.
pub fn stack_kv_left_padded(parts: &[(&DynValue, usize)]) -> Result<DynValue, Error> {
    if parts.is_empty() {
        return Err(Error::Invalid("no KV tensors to stack".into()));
    }
    let hosts = parts
        .iter()
        .map(|(v, _)| host_copy(v))
        .collect::<Result<Vec<_>, _>>()?;
    let on_host: Vec<(&DynValue, usize)> = parts
        .iter()
        .zip(&hosts)
        .map(|((v, pad), h)| (h.as_ref().unwrap_or(v), *pad))
        .collect();
    let out = stack_kv_host(&on_host)?;
    to_memory_of(parts[0].0, out)
}

fn stack_kv_host(parts: &[(&DynValue, usize)]) -> Result<DynValue, Error> {
    fn stack<
        T: ort::value::PrimitiveTensorElementType + Copy + Default + std::fmt::Debug + 'static,
    >(
        parts: &[(&DynValue, usize)],
    ) -> Result<DynValue, Error> {
        let mut views = Vec::with_capacity(parts.len());
        for (v, pad) in parts {
            let (shape, d) = v.try_extract_tensor::<T>().map_err(ort_err("kv stack"))?;
            views.push((
                shape.iter().map(|&x| x as usize).collect::<Vec<_>>(),
                d,
                *pad,
            ));
        }
        let (h, e) = (views[0].0[1], views[0].0[3]);
        let t_out = views[0].0[2] + views[0].2;
        let mut rows = 0;
        for (shape, _, pad) in &views {
            if shape.len() != 4 || shape[1] != h || shape[3] != e || shape[2] + pad != t_out {
                return Err(Error::Invalid(format!(
                    "KV tensors do not stack: {shape:?} left-padded by {pad} beside [_, {h}, {t_out}, {e}]"
                )));
            }
            rows += shape[0];
        }
        let mut out = Vec::with_capacity(rows * h * t_out * e);
        for (shape, d, pad) in &views {
            let t = shape[2];
            if t * e == 0 {
                out.resize(out.len() + shape[0] * h * pad * e, T::default());
                continue;
            }
            for block in d.chunks_exact(t * e).take(shape[0] * h) {
                out.resize(out.len() + pad * e, T::default());
                out.extend_from_slice(block);
            }
        }
        let shape = vec![rows as i64, h as i64, t_out as i64, e as i64];
        Ok(Tensor::from_array((shape, out))
            .map_err(ort_err("kv stack"))?
            .into_dyn())
    }
    if parts[0].0.try_extract_tensor::<f32>().is_ok() {
        stack::<f32>(parts)
    } else {
        stack::<f16>(parts)
    }
}
