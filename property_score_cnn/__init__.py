"""Stage 5: property-score CNNs (the original's 7-output and hairstyle CNNs). Public API for later stages:

    PROPERTY_NAMES                                   8 output names of the merged model, in order
    load_property_cnn(path, resolution=None)         -> nn.Module in eval mode (strict load, one-line errors)
    score_images(model, images, batch_size=256)      uint8 NHWC/NCHW (torch or numpy) -> (N, K) float32 CPU
    generator_output_to_uint8(images)                generator floats [-1, 1] -> the uint8 the PNGs hold
    score_generator_output(model, images)            = score_images(model, generator_output_to_uint8(images))
"""

from property_score_cnn.models import PROPERTY_NAMES
from property_score_cnn.scoring import (generator_output_to_uint8, load_property_cnn, score_generator_output,
                                        score_images)

__all__ = ["PROPERTY_NAMES", "load_property_cnn", "score_images", "generator_output_to_uint8",
           "score_generator_output"]
