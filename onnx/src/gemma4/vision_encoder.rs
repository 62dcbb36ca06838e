//! `vision_encoder*.onnx`: patches and positions of several images in, their soft tokens
//! (already projected into the language model's space) out, padding removed.

use super::config::ModelConfig;
use super::error::{ort_err, Error};
use super::image_processor::ProcessedImage;
use super::tensors::{float_tensor, i64_tensor, to_f32};
use crate::session::{LoadedSession, FLOATS};
use ort::value::TensorElementType;

pub struct VisionEncoder {
    pub session: LoadedSession,
    pixel_ty: TensorElementType,
    /// A static patch count means only one budget works with this export.
    pub fixed_patches: Option<usize>,
    pub hidden: usize,
}

impl VisionEncoder {
    /// Checks the graph against contract §9.2.
    pub fn new(session: LoadedSession, cfg: &ModelConfig, patch_dim: usize) -> Result<Self, Error> {
        let pv = session.require_input("pixel_values")?;
        session.check(pv, &FLOATS, 3)?;
        session.check_dim(
            pv,
            2,
            patch_dim,
            "patch_size² · 3 from processor_config.json",
        )?;
        let pos = session.require_input("pixel_position_ids")?;
        session.check(pos, &[TensorElementType::Int64], 3)?;
        session.check_dim(pos, 2, 2, "(x, y) per patch")?;
        let out = session.require_output("image_features")?;
        if !FLOATS.contains(&out.ty) {
            return Err(Error::contract(
                &session.graph,
                format!("`image_features` has element type {:?}", out.ty),
            ));
        }
        let hidden = cfg.text_config.hidden_size;
        session.check_dim(
            out,
            out.rank().saturating_sub(1),
            hidden,
            "text_config.hidden_size",
        )?;
        if let Some(extra) = session
            .inputs
            .iter()
            .find(|i| i.name != "pixel_values" && i.name != "pixel_position_ids")
        {
            return Err(Error::contract(
                &session.graph,
                format!("unexpected input `{}`", extra.name),
            ));
        }
        let pixel_ty = pv.ty;
        let fixed_patches = pv.dim(1).map(|d| d as usize);
        Ok(VisionEncoder {
            session,
            pixel_ty,
            fixed_patches,
            hidden,
        })
    }

    /// Image features of `images` in order, `[Σ soft tokens, hidden]` flattened. Images with
    /// different budgets are encoded in separate runs.
    pub fn encode(&mut self, images: &[&ProcessedImage]) -> Result<Vec<f32>, Error> {
        let mut feats: Vec<Option<Vec<f32>>> = vec![None; images.len()];
        let mut groups: Vec<usize> = images.iter().map(|i| i.max_patches).collect();
        groups.sort_unstable();
        groups.dedup();
        for mp in groups {
            let idx: Vec<usize> = (0..images.len())
                .filter(|&i| images[i].max_patches == mp)
                .collect();
            let group: Vec<&ProcessedImage> = idx.iter().map(|&i| images[i]).collect();
            let out = self.run(&group)?;
            let mut off = 0;
            for (&i, img) in idx.iter().zip(&group) {
                let n = img.num_soft_tokens * self.hidden;
                feats[i] = Some(out[off..off + n].to_vec());
                off += n;
            }
        }
        Ok(feats
            .into_iter()
            .flat_map(|f| f.expect("every image encoded"))
            .collect())
    }

    fn run(&mut self, images: &[&ProcessedImage]) -> Result<Vec<f32>, Error> {
        let first = images[0];
        if let Some(fixed) = self.fixed_patches {
            if fixed != first.max_patches {
                return Err(Error::Invalid(format!(
                    "{}: this export takes exactly {fixed} patches per image (budget {}), not {} (budget {})",
                    self.session.graph,
                    fixed / 9,
                    first.max_patches,
                    first.max_patches / 9
                )));
            }
        }
        let (n, mp, dim) = (images.len(), first.max_patches, first.patch_dim);
        let mut pv = Vec::with_capacity(n * mp * dim);
        let mut pos = Vec::with_capacity(n * mp * 2);
        for img in images {
            pv.extend_from_slice(&img.pixel_values);
            pos.extend_from_slice(&img.positions);
        }
        let inputs = vec![
            (
                "pixel_values",
                float_tensor(self.pixel_ty, vec![n, mp, dim], pv)?,
            ),
            ("pixel_position_ids", i64_tensor(vec![n, mp, 2], pos)?),
        ];
        let graph = self.session.graph.clone();
        let outputs = self
            .session
            .session
            .run(inputs)
            .map_err(ort_err(format!("{graph}: run")))?;
        let (shape, data) = to_f32(&outputs["image_features"], "image_features")?;
        let expected: usize = images.iter().map(|i| i.num_soft_tokens).sum();
        let rows = data.len() / self.hidden.max(1);
        if rows != expected || shape.last() != Some(&self.hidden) {
            return Err(Error::contract(
                &graph,
                format!("image_features has shape {shape:?}, expected [{expected}, {}] (valid soft tokens of all images)", self.hidden),
            ));
        }
        Ok(data)
    }
}
