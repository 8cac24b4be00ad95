"""pix2pix for Cityscapes labels -> photos: config, data, models, metrics, training loop."""
