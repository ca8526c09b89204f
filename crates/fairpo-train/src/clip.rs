//! Gradient clipping by the global L2 norm, as PyTorch's `clip_grad_norm_`.
//!
//! burn's `GradientClippingConfig::Norm` clips each parameter tensor's gradient to the
//! norm on its own, which changes the direction of the update whenever one tensor's
//! gradient is large. `clip_grad_norm_` (the usual PyTorch recipe) scales *all* gradients
//! by one factor, `min(1, max_norm / (‖g‖ + 1e-6))`, with ‖g‖ the L2 norm of every
//! gradient concatenated. `train.grad_clip_scope` picks between the two.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

/// What `train.grad_clip` bounds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClipScope {
    /// The norm of all gradients together (PyTorch `clip_grad_norm_`). The default.
    #[default]
    Global,
    /// Each parameter tensor's gradient norm separately (burn's `GradientClippingConfig::Norm`).
    PerParameter,
}

/// Sums ‖g‖² over the module's parameters that have a gradient.
struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let sq = g.square().sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + sq,
                None => sq,
            });
        }
    }
}

/// Multiplies every gradient of the module by `factor`.
struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// The global L2 norm of the module's gradients.
pub(crate) fn global_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> f64 {
    let mut v = SquaredNorm::<B> { grads, total: None };
    module.visit(&mut v);
    v.total
        .map(|t| t.into_scalar().elem::<f64>().sqrt())
        .unwrap_or(0.0)
}

/// Scales all gradients so that their global L2 norm is at most `max_norm` (PyTorch
/// `clip_grad_norm_`, including its 1e-6 in the denominator). Returns the gradients and
/// the norm before clipping.
pub(crate) fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    mut grads: GradientsParams,
    max_norm: f64,
) -> (GradientsParams, f64) {
    let norm = global_grad_norm::<B, M>(module, &grads);
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        let mut scale = Scale {
            grads: &mut grads,
            factor,
        };
        module.visit(&mut scale);
    }
    (grads, norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};

    type Ad = Autodiff<Flex>;

    #[derive(Module, Debug)]
    struct Two<B: Backend> {
        a: Param<Tensor<B, 1>>,
        b: Param<Tensor<B, 2>>,
    }

    /// Gradients of Σ a·ca + Σ b·cb are exactly ca and cb.
    fn grads_of(ca: [f32; 2], cb: [[f32; 2]; 1]) -> (Two<Ad>, GradientsParams) {
        let dev = Default::default();
        let m = Two::<Ad> {
            a: Param::from_tensor(Tensor::zeros([2], &dev).require_grad()),
            b: Param::from_tensor(Tensor::zeros([1, 2], &dev).require_grad()),
        };
        let loss = (m.a.val() * Tensor::from_floats(ca, &dev)).sum()
            + (m.b.val() * Tensor::from_floats(cb, &dev)).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        (m, grads)
    }

    fn values<const D: usize>(g: &GradientsParams, p: &Param<Tensor<Ad, D>>) -> Vec<f32> {
        g.get::<Flex, D>(p.id)
            .unwrap()
            .into_data()
            .into_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn scales_all_gradients_by_one_factor() {
        // ‖(3, 0, 0, 4)‖ = 5, so each gradient is scaled by 1 / (5 + 1e-6).
        let (m, g) = grads_of([3.0, 0.0], [[0.0, 4.0]]);
        let (g, norm) = clip_global_norm(&m, g, 1.0);
        assert!((norm - 5.0).abs() < 1e-6);
        let f = 1.0 / (5.0 + 1e-6);
        let a = values(&g, &m.a);
        let b = values(&g, &m.b);
        assert!((a[0] as f64 - 3.0 * f).abs() < 1e-6 && a[1] == 0.0, "{a:?}");
        assert!(b[0] == 0.0 && (b[1] as f64 - 4.0 * f).abs() < 1e-6, "{b:?}");
    }

    #[test]
    fn leaves_small_gradients_alone() {
        let (m, g) = grads_of([0.3, 0.0], [[0.0, 0.4]]);
        let (g, norm) = clip_global_norm(&m, g, 1.0);
        assert!((norm - 0.5).abs() < 1e-6);
        assert_eq!(values(&g, &m.a), vec![0.3, 0.0]);
        assert_eq!(values(&g, &m.b), vec![0.0, 0.4]);
    }

    #[test]
    fn scope_reads_from_toml() {
        #[derive(Deserialize)]
        struct W {
            s: ClipScope,
        }
        let w: W = toml::from_str("s = \"per_parameter\"").unwrap();
        assert_eq!(w.s, ClipScope::PerParameter);
        assert!(toml::from_str::<W>("s = \"layer\"").is_err());
    }
}
