"""The pipeline stages' names, in order: the keys of ``GenerationResult.timings``, metric labels, bench columns."""

TEXT_ENCODE = "text_encode"
DENOISE = "denoise"
VAE_DECODE = "vae_decode"
IMAGE_ENCODE = "image_encode"
PIPELINE = "pipeline"
"""The stacked baseline's single stage: the whole diffusers pipeline, in place of the first three."""

STAGE_ORDER: tuple[str, ...] = (TEXT_ENCODE, PIPELINE, DENOISE, VAE_DECODE, IMAGE_ENCODE)
