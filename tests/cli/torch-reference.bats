#!/usr/bin/env bats
# sn against PyTorch: the same nets built in torch.nn load an sn-init weights
# file as their state_dict (read with json+numpy only) and must give the same
# outputs, loss, and weights after one plain SGD step.
load helper

setup_file() {
	# torch may live only in Debian's python, not in one earlier on PATH
	export PY=
	for p in /usr/bin/python3 python3; do
		if "$p" -c 'import torch, numpy, yaml' 2>/dev/null; then export PY=$p; break; fi
	done
	[ -n "$PY" ] || return 0
	export REF=$BATS_TEST_DIRNAME/torch_reference.py
	export D=$BATS_FILE_TMPDIR
	"$PY" "$REF" data "$D/fmnist64.safetensors" --fmnist train --limit 64 --offset 1000
	"$PY" "$REF" data "$D/rgb64.safetensors" --random 64 --shape 3,32,32
	for net in mlp lenet cifar10_quick resnet inception; do
		sn-init "$NETS/$net.yaml" -o "$D/$net.safetensors" --seed 3
	done
}

setup() {
	[ -n "$PY" ] || skip "python3 with torch, numpy and yaml is not installed (import torch failed)"
	sn_setup_tmp
}

forward_agrees() {   # forward_agrees NET DATA
	sn-eval -w "$D/$1.safetensors" -d "$D/$2.safetensors" --json --batch 64 \
		--predictions p.tsv >r.json
	"$PY" "$REF" check-forward "$D/$1.safetensors" "$D/$2.safetensors" r.json p.tsv
}

sgd_step_agrees() {  # sgd_step_agrees NET DATA
	sn-sgd -w "$D/$1.safetensors" -d "$D/$2.safetensors" -o w1.safetensors \
		--solver sgd --lr 0.01 --weight-decay 0 --iters 1 --batch 64
	"$PY" "$REF" check-sgd "$D/$1.safetensors" "$D/$2.safetensors" w1.safetensors 0.01
}

@test "LeNet outputs and loss agree with torch.nn within 1e-4" {
	forward_agrees lenet fmnist64
}

@test "one plain SGD step of LeNet on a 64-example shard equals torch.optim.SGD within 1e-4" {
	sgd_step_agrees lenet fmnist64
}

@test "the MLP agrees with torch.nn, forward and one SGD step" {
	forward_agrees mlp fmnist64
	sgd_step_agrees mlp fmnist64
}

@test "cifar10_quick agrees with torch.nn, forward and one SGD step" {
	forward_agrees cifar10_quick rgb64
	sgd_step_agrees cifar10_quick rgb64
}

@test "the small ResNet (batchnorm, 1x1 stride-2 shortcuts, add) agrees with torch.nn, forward and one SGD step" {
	forward_agrees resnet fmnist64
	sgd_step_agrees resnet fmnist64
}

@test "the inception-style net (1x1, 3x3, 5x5 and a pool, concatenated) agrees with torch.nn, forward and one SGD step" {
	forward_agrees inception fmnist64
	sgd_step_agrees inception fmnist64
}

@test "the reference notices weights that differ" {
	sn-sgd -w "$D/lenet.safetensors" -d "$D/fmnist64.safetensors" -o w1.safetensors \
		--solver sgd --lr 0.02 --weight-decay 0 --iters 1 --batch 64
	run "$PY" "$REF" check-sgd "$D/lenet.safetensors" "$D/fmnist64.safetensors" w1.safetensors 0.01
	[ "$status" -ne 0 ]
	[[ "$output" == *"relative difference"* ]]
}
