"""ups_jax.models: trained grid encoder, AdaLN-conditioned U-shaped PDE-Transformer operator, any-point decoder."""

from ups_jax.models.decoder import AnyPointDecoder, CrossAttention, DecoderBlock
from ups_jax.models.encoder import GridEncoder
from ups_jax.models.layers import (AdaLN, MLP, RMSNorm, downsample_tokens, fourier_features, gelu, patchify,
                                   token_centres01, upsample_tokens_linear)
from ups_jax.models.operator import ConditionEmbedding, LatentOperator
from ups_jax.models.pdet import (ChannelSeparatedSelfAttention, FeedForward, PDETransformer, TransformerLayer,
                                 check_attention_dims)
from ups_jax.models.ups import (CONFIG_KEY_FOR_PARAM, UPS, ModelConfigError, abstract_model, build_model,
                                config_key_for, count_params, param_arrays, param_shapes, shape_mismatches)

__all__ = [
    "AdaLN", "AnyPointDecoder", "CONFIG_KEY_FOR_PARAM", "ChannelSeparatedSelfAttention", "ConditionEmbedding",
    "CrossAttention", "DecoderBlock", "FeedForward", "GridEncoder", "LatentOperator", "MLP", "ModelConfigError",
    "PDETransformer", "RMSNorm", "TransformerLayer", "UPS", "abstract_model", "build_model", "check_attention_dims",
    "config_key_for", "count_params", "downsample_tokens", "fourier_features", "gelu", "param_arrays",
    "param_shapes", "patchify", "shape_mismatches", "token_centres01", "upsample_tokens_linear",
]
