"""Speed machinery that only pays on a small CPU; the accelerator path never imports it."""
