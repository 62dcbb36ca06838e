//! Small conversions between host `f32` buffers and ORT values of the graph's float type.

use super::error::{ort_err, Error};
use half::f16;
use ort::value::{DynValue, Tensor, TensorElementType};

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

/// Rows `rows` of axis 0 and, on axis 2, positions `from..` of a rank-4 KV tensor, in the
/// tensor's own element type.
pub fn select_kv(v: &DynValue, rows: &[usize], from: usize) -> Result<DynValue, Error> {
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
