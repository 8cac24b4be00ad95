"""Data: the loaders and the split (`loader.py`), the embedded synthetic street scenes (`synthetic.py`),
fetching and preparing real Cityscapes (`fetch.py`), the Cityscapes label palette (`labels.py`), pixel
scaling (`pixels.py`)."""
