"""The scaler's pure part: what the hosts report turned into demand, and demand into replicas."""
