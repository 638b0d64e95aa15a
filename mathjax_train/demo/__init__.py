"""The README's main job (`mathjax-train demo`): run.py runs configs/pipeline_demo.yaml and summarizes it,
report.py writes its report; study.py runs the RFT paper's protocol over seeds (`demo --study`)."""

from mathjax_train.demo.run import DEMO_PIPELINE, SUMMARY_FILE, run_demo
from mathjax_train.demo.study import STUDY_PIPELINE, run_study

__all__ = ["DEMO_PIPELINE", "STUDY_PIPELINE", "SUMMARY_FILE", "run_demo", "run_study"]
