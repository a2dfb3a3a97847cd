#!/usr/bin/env bash
# Screening sweep for Study 3: frozen embedded model, fixed taus, 32 problems x 8 samples.
# Writes experiments/study3-screen/{out,log}/ (ignored by git); the table is in docs/results.md, "Study 3".
# Run from anywhere: bash experiments/study3-screen.sh (PYTHON: the interpreter with introllm installed).
cd "$(dirname "$0")/study3-screen" 2>/dev/null || { mkdir -p "$(dirname "$0")/study3-screen" && cd "$(dirname "$0")/study3-screen"; }
PY="${PYTHON:-python} -P -m introllm"
NUM="Give only the final answer as 'Answer: <number>'."
STR="Give only the final answer as 'Answer: <answer>'."
COT="Think step by step, then give the final answer as 'Answer: <number>'."
run() { # name task args instruction maxtok
  for pol in greedy fixed:0.3 fixed:0.6 fixed:1.0; do
    out=out/$1/${pol/:/}.jsonl
    [ -f $out.summary.json ] && continue
    k=8; [ $pol = greedy ] && k=1
    nice -n 10 $PY -q eval --dataset rg:$2 --rg-args "$3" --instruction "$4" --policy $pol --k $k --limit 32 --num-problems 64 \
      --max-new-tokens $5 --batch-prompts 16 --output $out > log/$1-${pol/:/}.log 2>&1
    tail -1 log/$1-${pol/:/}.log | head -c 0
    grep -h "Avg@" log/$1-${pol/:/}.log | head -1 | sed "s/^/$1 $pol: /"
  done
}
mkdir -p out log
run arith1 basic_arithmetic '{"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}' "$NUM" 48
run chain3 chain_sum '{"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1}' "$NUM" 48
run products products '{"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}' "$NUM" 48
run gcd gcd '{"min_numbers": 2, "max_numbers": 2, "min_value": 2, "max_value": 30}' "$NUM" 48
run lcm lcm '{"min_numbers": 2, "max_numbers": 2, "min_value": 2, "max_value": 10}' "$NUM" 48
run letters letter_counting '{"min_words": 3, "max_words": 5}' "$NUM" 48
run legs leg_counting '{"min_animals": 1, "max_animals": 1, "max_instances": 2}' "$NUM" 48
run spell_back spell_backward '{"min_word_len": 3, "max_word_len": 5}' "$STR" 48
run family family_relationships '{}' "$STR" 48
run word_rev word_sequence_reversal '{"min_words": 3, "max_words": 4}' "$STR" 48
run arith2-cot basic_arithmetic '{"min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 2}' "$COT" 192
run chain3-cot chain_sum '{"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 2}' "$COT" 192
run simple_eq-cot simple_equations '{"min_terms": 2, "max_terms": 2, "min_value": 1, "max_value": 10}' "$COT" 192
run lcm-cot lcm '{"min_numbers": 2, "max_numbers": 2, "min_value": 2, "max_value": 10}' "$COT" 192
run legs-cot leg_counting '{"min_animals": 1, "max_animals": 2, "max_instances": 2}' "$COT" 192
run letters-cot letter_counting '{"min_words": 3, "max_words": 5}' "$COT" 192
echo SCREEN DONE
