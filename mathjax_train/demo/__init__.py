"""The README's main job (`mathjax-train demo`): run.py runs configs/pipeline_demo.yaml and summarizes it,
report.py writes its report."""

from mathjax_train.demo.run import DEMO_PIPELINE, SUMMARY_FILE, run_demo

__all__ = ["DEMO_PIPELINE", "SUMMARY_FILE", "run_demo"]
