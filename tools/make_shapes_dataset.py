"""Write the synthetic shapes detection dataset (COCO format) used by the demo configs."""
import argparse

from ghostdet.datasets.shapes import make_shapes_dataset


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--out', required=True, help='output directory (the config\'s data_root)')
    parser.add_argument('--num-train', type=int, default=400, help='number of training images')
    parser.add_argument('--num-val', type=int, default=50, help='number of validation images')
    parser.add_argument('--image-size', type=int, default=256, help='side of the square images')
    parser.add_argument('--seed', type=int, default=0, help='same seed, same files')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    info = make_shapes_dataset(
        args.out, num_train=args.num_train, num_val=args.num_val, image_size=args.image_size, seed=args.seed)
    action = 'wrote' if info['generated'] else 'already up to date:'
    counts = ', '.join(f'{split} {n}' for split, n in info['num_annotations'].items())
    print(f"{action} {info['data_root']} (classes {', '.join(info['classes'])}; objects: {counts})")


if __name__ == '__main__':
    main()
