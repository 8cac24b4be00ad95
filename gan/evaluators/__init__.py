"""Judging generated photos: the metric registry and its worker pool (`metrics.py`), the evaluator that
writes a run's evaluation rows, samples and test summary (`evaluation.py`), the segmenter behind the
FCN-score (`segmenter.py`), and Fréchet distance / KID (`fid.py`)."""
