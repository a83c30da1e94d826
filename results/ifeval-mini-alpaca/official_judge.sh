# AlpacaEval's own GPT-4 judge (needs OPENAI_API_KEY and internet; the default annotator of
# AlpacaEval 2.0, whose length-controlled win rate needs the hub as well)
alpaca_eval --model_outputs results/ifeval-mini-alpaca/base/model_outputs.json --reference_outputs results/ifeval-mini-alpaca/reference_gpt4.json --annotators_config weighted_alpaca_eval_gpt4_turbo --output_path results/ifeval-mini-alpaca/base/official
alpaca_eval --model_outputs results/ifeval-mini-alpaca/bon-n4/model_outputs.json --reference_outputs results/ifeval-mini-alpaca/reference_gpt4.json --annotators_config weighted_alpaca_eval_gpt4_turbo --output_path results/ifeval-mini-alpaca/bon-n4/official
alpaca_eval --model_outputs results/ifeval-mini-alpaca/cbs-w2-k2-l16/model_outputs.json --reference_outputs results/ifeval-mini-alpaca/reference_gpt4.json --annotators_config weighted_alpaca_eval_gpt4_turbo --output_path results/ifeval-mini-alpaca/cbs-w2-k2-l16/official
