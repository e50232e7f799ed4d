"""Thin TRL trainers (SFT/DPO/GRPO), rewards, evaluation and CumPT."""
