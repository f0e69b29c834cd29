"""The evaluator service: scores, videos and TensorBoard events of a run while it trains
(`ba3c evaluator`, main.py), and of a saved checkpoint with no cluster (`ba3c evaluate`,
offline.py). See README.md in this folder."""
