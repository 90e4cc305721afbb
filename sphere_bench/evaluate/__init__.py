"""Evaluation: latency, throughput, memory and equivariance error of trained or fresh models."""
