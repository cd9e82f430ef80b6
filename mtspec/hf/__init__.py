"""Hugging Face base models: import onto a mesh, export for transformers, tokenizer + chat.

cfg, params = load.load(model_dir, mesh)          # Llama 3, Qwen2/2.5, Qwen3
export.export(params, cfg, out_dir, base_config=load.read_config(model_dir),
              tokenizer_dir=model_dir)
tok = tokenizer.HFTokenizer(model_dir); ids, weights = tok.render_chat(messages)
"""
