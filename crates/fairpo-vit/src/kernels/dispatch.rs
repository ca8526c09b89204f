//! Recognising the CPU backend, and faster CPU kernels for elementwise ops behind burn's
//! generic API.
//!
//! burn-flex 0.21 runs GELU (libm `erff`) and softmax (libm `expf`) one element at a time on
//! one thread. For f32 tensors on `Flex` and `Autodiff<Flex>` the ops here instead run
//! branch-free loops that the compiler vectorises, split across rayon's threads, with their
//! own backward op under autodiff. Any other backend or dtype goes to burn's own op. The
//! backend is recognised by downcasting (`Any`), so models stay generic over `B: Backend`.

use std::any::Any;
use std::marker::PhantomData;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape, Tensor, TensorData, TensorPrimitive};

/// An op computed on the host, on the contiguous row-major values of a tensor whose last
/// dimension has length `row`.
pub(crate) trait HostOp: Send + std::fmt::Debug + 'static {
    /// Whether backward needs the op's input (true) or its output (false).
    const SAVES_INPUT: bool;
    /// `values` := op(values).
    fn forward(values: &mut [f32], row: usize);
    /// `grad` := ∂L/∂input from ∂L/∂output = `grad` and the saved input or output.
    fn backward(saved: &[f32], grad: &mut [f32], row: usize);
}

/// Runs `Op` on Flex / Autodiff<Flex> f32 tensors and `fallback` on anything else.
pub(crate) fn apply<Op: HostOp, B: Backend, const D: usize>(
    x: Tensor<B, D>,
    fallback: impl FnOnce(Tensor<B, D>) -> Tensor<B, D>,
) -> Tensor<B, D> {
    if x.dtype() != DType::F32 {
        return fallback(x);
    }
    let boxed: Box<dyn Any> = Box::new(x);
    let boxed = match boxed.downcast::<Tensor<Flex, D>>() {
        Ok(flex) => {
            let y = forward::<Op, D>(flex.into_primitive().tensor());
            return cast(Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(y)));
        }
        Err(other) => other,
    };
    let boxed = match boxed.downcast::<Tensor<Autodiff<Flex>, D>>() {
        Ok(ad) => return cast(autodiff::<Op, D>(*ad)),
        Err(other) => other,
    };
    fallback(unbox(boxed))
}

/// `x` as a `U` when `T` is `U`: how a generic module is recognised as the CPU backend's.
pub(crate) fn downcast_ref<T: Any, U: Any>(x: &T) -> Option<&U> {
    (x as &dyn Any).downcast_ref::<U>()
}

/// Re-types a value whose type a downcast has already established.
pub(crate) fn cast<T: Any, U: Any>(value: T) -> U {
    unbox(Box::new(value))
}

fn unbox<U: Any>(boxed: Box<dyn Any>) -> U {
    *boxed
        .downcast::<U>()
        .expect("the backend was matched by a downcast before")
}

fn host_values<const D: usize>(x: FloatTensor<Flex>) -> (Vec<f32>, Shape) {
    let t = Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(x));
    let shape = t.shape();
    let values = t
        .into_data()
        .into_vec::<f32>()
        .expect("an f32 tensor reads back as f32");
    (values, shape)
}

fn to_primitive<const D: usize>(values: Vec<f32>, shape: Shape) -> FloatTensor<Flex> {
    Tensor::<Flex, D>::from_data(TensorData::new(values, shape), &Default::default())
        .into_primitive()
        .tensor()
}

fn row_len(shape: &Shape) -> usize {
    shape.as_slice().last().copied().unwrap_or(1).max(1)
}

fn forward<Op: HostOp, const D: usize>(x: FloatTensor<Flex>) -> FloatTensor<Flex> {
    let (mut values, shape) = host_values::<D>(x);
    Op::forward(&mut values, row_len(&shape));
    to_primitive::<D>(values, shape)
}

/// The backward step of `Op`; its state is the op's input or output.
#[derive(Debug)]
struct HostBackward<Op, const D: usize>(PhantomData<Op>);

impl<Op: HostOp, const D: usize> Backward<Flex, 1> for HostBackward<Op, D> {
    type State = FloatTensor<Flex>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let saved = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let (saved, _) = host_values::<D>(saved);
            let (mut grad, shape) = host_values::<D>(grad);
            Op::backward(&saved, &mut grad, row_len(&shape));
            to_primitive::<D>(grad, shape)
        });
    }
}

fn autodiff<Op: HostOp, const D: usize>(x: Tensor<Autodiff<Flex>, D>) -> Tensor<Autodiff<Flex>, D> {
    let x = x.into_primitive().tensor();
    let out = match HostBackward::<Op, D>(PhantomData)
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let y = forward::<Op, D>(x.primitive.clone());
            let saved = if Op::SAVES_INPUT {
                x.primitive
            } else {
                y.clone()
            };
            prep.finish(saved, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward::<Op, D>(x.primitive)),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}
