"""Data: the VOC reader, the synthetic VOC-format set, SSD augmentation and the batch loader."""
