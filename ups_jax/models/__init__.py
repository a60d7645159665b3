"""ups_jax.models: trained grid encoder, AdaLN-conditioned U-shaped PDE-Transformer operator, any-point decoder."""

from ups_jax.models.decoder import AnyPointDecoder, CrossAttention, DecoderBlock
from ups_jax.models.encoder import GridEncoder
from ups_jax.models.layers import (AdaLN, MLP, RMSNorm, downsample_tokens, fourier_features, gelu, patchify,
                                   token_centres01, upsample_tokens_linear)
from ups_jax.models.operator import ConditionEmbedding, LatentOperator
from ups_jax.models.pdet import (ChannelSeparatedSelfAttention, FeedForward, PDETransformer, TransformerLayer,
                                 check_attention_dims)
from ups_jax.models.fno import FNO1d, SpectralConv1d
from ups_jax.models.fno2d import FNO2d, SpectralConv2d
from ups_jax.models.ups import (CONFIG_KEY_FOR_PARAM, UPS, ModelConfigError, abstract_model, build_model,
                                config_key_for, context_frames, count_params, model_kind, param_arrays,
                                param_shapes, shape_mismatches)

__all__ = [
    "abstract_model", "AdaLN", "AnyPointDecoder", "build_model", "ChannelSeparatedSelfAttention",
    "check_attention_dims", "ConditionEmbedding", "config_key_for", "CONFIG_KEY_FOR_PARAM", "context_frames",
    "count_params", "CrossAttention", "DecoderBlock", "downsample_tokens", "FeedForward", "FNO1d", "FNO2d",
    "fourier_features", "gelu", "GridEncoder", "LatentOperator", "MLP", "model_kind", "ModelConfigError",
    "param_arrays", "param_shapes", "patchify", "PDETransformer", "RMSNorm", "shape_mismatches", "SpectralConv1d", "SpectralConv2d",
    "token_centres01", "TransformerLayer", "UPS", "upsample_tokens_linear",
]
