"""`mathjax-train plan`: parameters, FLOPs, per-device memory and step time of a config on a TPU slice."""
